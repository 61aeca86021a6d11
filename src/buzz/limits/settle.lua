-- settle: for each reservation of a batch, give back what it took and did not use, and charge
-- what it used beyond. As in reserve, each scope is read and written once per batch.
--
-- ARGV: settle window (s), clock (us since the epoch, from tests only; "" for Redis's TIME),
--       then per reservation: marker, id, day, month, extra input, extra output, extra cost, n,
--       then per scope: key prefix, "itpm,otpm,concurrency held,prepaid" ("" = unlimited, "1"/"0")
-- "extra" is actual minus reserved: negative returns, positive charges (below zero if need be:
-- the request already happened). Returns, per reservation, 1, or 0 when it was already settled.

local window = tonumber(ARGV[1])
local _, now = now_of(ARGV[2])

local states, order = {}, {}
local function state(prefix)
  local st = states[prefix]
  if st == nil then
    st = {prefix = prefix, drawn = 0, ids = {}}
    states[prefix] = st
    order[#order + 1] = st
  end
  return st
end

-- Spend counters by key, with the lifetime reserve gives them: their period, then the settle
-- window. A batch may settle reservations of two days (a late settle), each in its own counter.
local counters, counted = {}, {}
local function count(key, amount, period_end)
  local c = counters[key]
  if c == nil then
    c = {key = key, amount = 0, ttl = ceil_div(period_end * SECOND - now, SECOND) + window}
    counters[key] = c
    counted[#counted + 1] = c
  end
  c.amount = c.amount + amount
end

local results, at = {}, 3
while at <= #ARGV do
  local marker, id = ARGV[at], ARGV[at + 1]
  local day, month = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
  local extra = {0, tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])} -- of rpm, itpm, otpm
  local cost, n = tonumber(ARGV[at + 6]), tonumber(ARGV[at + 7])
  -- The marker is the reservation: deleting it is what makes a second settle a no-op.
  if redis.call('DEL', marker) == 0 then
    results[#results + 1] = 0
  else
    results[#results + 1] = 1
    for i = 1, n do
      local prefix, limits = ARGV[at + 6 + 2 * i], split(ARGV[at + 7 + 2 * i], 4)
      local st = state(prefix)
      for j = 2, 3 do
        local limit = limits[j - 1]
        if limit ~= '' and extra[j] ~= 0 then
          if st.short == nil then
            st.short, st.cap = load(prefix .. 'bx', now)
          end
          -- Corrected as the bucket is configured now (its stored capacity), as in process.
          local capacity = st.cap[j] or tonumber(limit)
          local token = units(capacity)
          local s = st.short[j] + extra[j] * token
          if s < 0 then s = 0 end
          st.short[j], st.cap[j] = s, capacity
        end
      end
      if limits[3] == '1' then st.ids[#st.ids + 1] = id end
      if cost ~= 0 then
        -- A counter may not exist yet (nothing was reserved for a request thought free).
        count(prefix .. 'd:' .. day, cost, day_end(day))
        count(prefix .. 'm:' .. month, cost, month_end(month))
        if limits[4] == '1' then st.drawn = st.drawn + cost end
      end
    end
  end
  at = at + 8 + 2 * n
end

for _, st in ipairs(order) do
  local prefix = st.prefix
  if st.short ~= nil then
    -- All three buckets were read and every one the hash holds is written: it lives until they
    -- are all full again, and no longer.
    local full_in = store(prefix .. 'bx', st.short, st.cap, now)
    redis.call('PEXPIRE', prefix .. 'bx', ceil_div(full_in, 1000) + 1000)
  end
  if #st.ids > 0 then redis.call('ZREM', prefix .. 'cx', unpack(st.ids)) end
  if st.drawn ~= 0 then redis.call('DECRBY', prefix .. 'bal', st.drawn) end
end
for _, c in ipairs(counted) do
  if c.amount ~= 0 and c.ttl > 0 then spend(c.key, c.amount, c.ttl) end
end
return results
