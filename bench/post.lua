-- wrk script for bench/run.py: POST one fixed body, report exact figures as one JSON line.
-- Everything comes from the environment, so one script serves every target, size and key.
--   BENCH_BODY_FILE     file holding the request body (read once per thread, sent as is)
--   BENCH_API_KEY       buzz key (empty or unset: no key, for the direct runs)
--   BENCH_AUTH          how the key and API headers go (the same as loadgen.request_headers):
--                         x-api-key (default): Anthropic style, x-api-key + anthropic-version
--                         bearer: OpenAI style (/v1/chat/completions), authorization: Bearer <key>

local body_file = assert(os.getenv("BENCH_BODY_FILE"), "BENCH_BODY_FILE is not set")
local handle = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = handle:read("*a")
handle:close()
wrk.headers["content-type"] = "application/json"

local auth = os.getenv("BENCH_AUTH")
if auth == nil or auth == "" then
  auth = "x-api-key"
end
assert(auth == "x-api-key" or auth == "bearer", "BENCH_AUTH must be x-api-key or bearer, not " .. auth)
if auth == "x-api-key" then
  wrk.headers["anthropic-version"] = "2023-06-01"
end

local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then
  if auth == "bearer" then
    wrk.headers["authorization"] = "Bearer " .. key
  else
    wrk.headers["x-api-key"] = key
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,'
      .. '"mean_us":%.1f,"max_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,'
      .. '"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
