-- renew: extend the concurrency leases of one process's requests in flight, all in one call.
--
-- ARGV: lease (us), clock (us since the epoch, "" for Redis's TIME), then per reservation:
--       marker, id, k, and the k concurrency keys it holds a slot in.
-- A reservation whose marker is gone was settled: its slot is not brought back. One that is
-- still open gets its slot back even if the lease ran out meanwhile (an outage longer than a
-- lease): the request is in flight, so the slot is taken. Returns how many were renewed.

local lease = tonumber(ARGV[1])
local _, now = now_of(ARGV[2])
local expires = int(now + lease)
local ttl = ceil_div(lease, SECOND) + 1
local renewed, at = 0, 3
while at <= #ARGV do
  local marker, id, k = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  if redis.call('EXISTS', marker) == 1 then
    for j = 1, k do
      local key = ARGV[at + 2 + j]
      redis.call('ZADD', key, expires, id)
      extend(key, ttl)
    end
    renewed = renewed + 1
  end
  at = at + 3 + k
end
return renewed
