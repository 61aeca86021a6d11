-- settle: give back what a reservation took and did not use, charge what it used beyond.
--
-- ARGV: marker, id, day, month, extra input, extra output, extra cost, n, settle window (s),
--       then per scope: key prefix, "itpm,otpm,concurrency held,prepaid" ("" = unlimited, "1"/"0"),
--       then, from tests only, a clock (us since the epoch) in place of Redis's TIME
-- "extra" is actual minus reserved: negative returns, positive charges (below zero if need be:
-- the request already happened). Returns 1, or 0 when already settled.

local marker, id = ARGV[1], ARGV[2]
local day, month = tonumber(ARGV[3]), tonumber(ARGV[4])
local extra_in, extra_out, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n, window = tonumber(ARGV[8]), tonumber(ARGV[9])

-- The marker is the reservation: deleting it is what makes a second settle a no-op.
if redis.call('DEL', marker) == 0 then return 0 end

local _, now = now_of(ARGV[10 + 2 * n])
for i = 1, n do
  local base, limits = ARGV[8 + 2 * i], split(ARGV[9 + 2 * i])
  local corrections = {}
  for _, b in ipairs({{'itpm', tonumber(limits[1]), extra_in}, {'otpm', tonumber(limits[2]), extra_out}}) do
    if b[2] ~= nil and b[3] ~= 0 then corrections[#corrections + 1] = b end
  end
  if #corrections > 0 then
    local names = {}
    for _, b in ipairs(corrections) do names[#names + 1] = b[1] end
    local loaded = load(base .. 'bx', names, now)
    local corrected = {}
    for _, b in ipairs(corrections) do
      local name, extra = b[1], b[3]
      -- Corrected as the bucket is configured now (its stored capacity), as in process.
      local short, was = loaded[name][1], loaded[name][2]
      local capacity = was or b[2]
      local token = units(capacity)
      short = short + extra * token
      if short < 0 then short = 0 end
      corrected[#corrected + 1] = {name, short, capacity}
    end
    local full_in = store(base .. 'bx', corrected, now)
    if full_in >= 0 then keep(base .. 'bx', full_in) end
  end
  if limits[3] == '1' then redis.call('ZREM', base .. 'cx', id) end
  if cost ~= 0 then
    -- Same lifetime as reserve gives a counter: its period, then the settle window. A counter
    -- may not exist yet (nothing was reserved for a request thought free).
    for _, c in ipairs({{base .. 'd:' .. day, day_end(day)}, {base .. 'm:' .. month, month_end(month)}}) do
      local ttl = ceil_div(c[2] * SECOND - now, SECOND) + window
      if ttl > 0 then spend(c[1], cost, ttl) end
    end
    if limits[4] == '1' then redis.call('DECRBY', base .. 'bal', cost) end
  end
end
return 1
