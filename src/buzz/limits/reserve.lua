-- reserve: for each request of a batch, in order, check every limit of every scope, then
-- consume them all, or nothing. One script is one atomic step in Redis, so there is no window
-- between check and consume for concurrent requests (from any number of buzz processes) to slip
-- through. A batch is what one buzz process had waiting while its previous call was in flight:
-- each scope is read once and written once per batch, however many of its requests it holds,
-- and Redis, which runs one script at a time for every process, spends far less per request.
--
-- ARGV: settle window (s), concurrency lease (us), concurrency retry hint (us), clock (us since
--       the epoch, from tests only; "" for Redis's TIME), then per request:
--       marker, id, input, output, cost, n, then per scope: key prefix,
--       "rpm,itpm,otpm,concurrency,daily,monthly,prepaid,reported" ("" = unlimited; flags "1"/"0";
--       reported "0": only the balance is in the reply's tail, as the response headers need)
-- Keys are built here from the scope prefixes because spend keys depend on Redis's clock.
-- Returns one string per request: "ok,day,month,now" or "no,scope,limit,retry_after,now", each
-- followed by the figures of `report` below; or "dup,day,month" (retry_after in seconds, to the
-- microsecond; now, Redis's clock in microseconds since the epoch).

local window, lease, HINT = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local sec, now = now_of(ARGV[4])
local day, month, to_day, to_month = periods(sec, now)
local stamp = int(day) .. ',' .. int(month)
local ok_head = 'ok,' .. stamp .. ',' .. int(now)

-- Each scope's state, read when a request first names it, changed in memory by each request in
-- turn, and written back once at the end.
local states, order = {}, {}
local function state(prefix)
  local st = states[prefix]
  if st == nil then
    local short, cap = load(prefix .. 'bx', now)
    local money = redis.call('MGET', prefix .. 'd:' .. day, prefix .. 'm:' .. month, prefix .. 'bal')
    st = {
      prefix = prefix, short = short, cap = cap, dirty = false,
      today = tonumber(money[1] or '0'), month = tonumber(money[2] or '0'), balance = tonumber(money[3] or '0'),
      spent = 0, drawn = 0, ids = {},
    }
    states[prefix] = st
    order[#order + 1] = st
  end
  return st
end

-- Requests in flight in a scope: its leases that have not run out. A lease that ran out belongs
-- to a request whose process stopped renewing it: it died, or its settlement was lost.
local function held(st)
  if st.held == nil then
    local key = st.prefix .. 'cx'
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    st.held = redis.call('ZCARD', key)
    st.held_before = st.held
  end
  return st.held
end

-- What a request's scopes stand at, as its reply's tail: after its take, or, with a rejection, as
-- they are (nothing was taken). Raw figures, in the order the caller packed the limits: per
-- reported scope, each bucket's shortfall, the leases held, today's and this month's spend (of
-- the limits set); then a prepaid scope's balance. The caller knows the capacities and works out
-- what is left and when it is back: Lua is slow at that arithmetic and its formatting.
local function report(out, sts, ls)
  for i, st in ipairs(sts) do
    local l = ls[i]
    if l[8] ~= '0' then
      for j = 1, 3 do
        if l[j] ~= '' then out[#out + 1] = st.short[j] > 0 and int(st.short[j]) or '0' end
      end
      if l[4] ~= '' then out[#out + 1] = st.held end
      if l[5] ~= '' then out[#out + 1] = int(st.today) end
      if l[6] ~= '' then out[#out + 1] = int(st.month) end
    end
    if l[7] == '1' then out[#out + 1] = int(st.balance) end
  end
  return table.concat(out, ',')
end

local function reserve(marker, id, need, cost, n, first)
  local sts, ls = {}, {}
  -- The binding limit: one no wait can satisfy, else the one that recovers last, else concurrency.
  local never, latest, busy
  local function turn_away(i, name, retry)
    if retry == nil then
      if never == nil then never = {i, name, ''} end
    elseif name == 'concurrency' then
      if busy == nil then busy = {i, name, seconds(retry)} end
    elseif latest == nil or retry > latest[4] then
      latest = {i, name, seconds(retry), retry}
    end
  end

  for i = 1, n do
    local st, l = state(ARGV[first + 2 * i - 2]), split(ARGV[first + 2 * i - 1], 8)
    sts[i], ls[i] = st, l
    for j = 1, 3 do
      local capacity = tonumber(l[j])
      if capacity ~= nil then
        local was = st.cap[j]
        if was ~= capacity then
          -- A changed limit applies from now, even to a request it turns away: from this
          -- moment on, the bucket refills at the new rate. (A missing bucket is full at any.)
          if was ~= nil then st.short[j] = convert(st.short[j], was, capacity) end
          st.cap[j], st.dirty = capacity, true
        end
        local token, rate = units(capacity)
        if need[j] > capacity then
          turn_away(i, BUCKETS[j], nil)
        else
          -- How far the bucket is from holding `need`: it holds its capacity once full.
          local over = st.short[j] + need[j] * token - capacity * token
          if over > 0 then
            -- Rounded up to the microsecond: a retry at the advertised moment is never early.
            if rate == 0 then turn_away(i, BUCKETS[j], nil) else turn_away(i, BUCKETS[j], ceil_div(over, rate)) end
          end
        end
      end
    end
    local conc = tonumber(l[4])
    if conc ~= nil and held(st) >= conc then
      if conc > 0 then turn_away(i, 'concurrency', HINT) else turn_away(i, 'concurrency', nil) end
    end
    if l[7] == '1' and st.balance - cost < 0 then turn_away(i, 'balance', nil) end
    -- Monthly first: when both are spent, waiting for tomorrow would not help.
    local monthly, daily = tonumber(l[6]), tonumber(l[5])
    if monthly ~= nil and st.month + cost > monthly then
      if cost > monthly then turn_away(i, 'monthly', nil) else turn_away(i, 'monthly', to_month) end
    end
    if daily ~= nil and st.today + cost > daily then
      if cost > daily then turn_away(i, 'daily', nil) else turn_away(i, 'daily', to_day) end
    end
  end

  local verdict = never or latest or busy
  if verdict then
    redis.call('DEL', marker)
    return report({'no', int(verdict[1]), verdict[2], verdict[3], int(now)}, sts, ls)
  end
  for i, st in ipairs(sts) do
    local l = ls[i]
    for j = 1, 3 do
      if l[j] ~= '' then
        local token = units(st.cap[j])
        st.short[j], st.dirty = st.short[j] + need[j] * token, true
      end
    end
    if l[4] ~= '' then
      st.held = st.held + 1
      st.ids[#st.ids + 1] = id
    end
    st.today, st.month, st.spent = st.today + cost, st.month + cost, st.spent + cost
    if l[7] == '1' then st.balance, st.drawn = st.balance - cost, st.drawn + cost end
  end
  return report({ok_head}, sts, ls)
end

local replies, at = {}, 5
while at <= #ARGV do
  local marker, id, cost, n = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
  local need = {1, tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])} -- of rpm, itpm, otpm
  -- The marker says this reservation went through, so a client retry after a lost reply does
  -- not reserve twice. Set first, in the call that finds an earlier one; a rejection deletes it.
  if redis.call('SET', marker, stamp, 'NX', 'EX', window) then
    replies[#replies + 1] = reserve(marker, id, need, cost, n, at + 6)
  else
    replies[#replies + 1] = 'dup,' .. redis.call('GET', marker)
  end
  at = at + 6 + 2 * n
end

local expires = int(now + lease)
for _, st in ipairs(order) do
  local prefix = st.prefix
  if st.dirty then
    -- Every bucket of the scope is written, so the hash lives until they are all full again,
    -- and no longer: a full bucket is a missing one.
    local full_in = store(prefix .. 'bx', st.short, st.cap, now)
    redis.call('PEXPIRE', prefix .. 'bx', ceil_div(full_in, 1000) + 1000)
  end
  if #st.ids > 0 then
    -- A lease per request, renewed by the holder's process while it is in flight (renew.lua).
    local key, members = prefix .. 'cx', {}
    for _, rid in ipairs(st.ids) do
      members[#members + 1] = expires
      members[#members + 1] = rid
    end
    redis.call('ZADD', key, unpack(members))
    -- The set lives as long as its longest lease. Other processes may hold longer ones ("GT"
    -- never shortens); a set that was empty did not exist, and has no lifetime to compare.
    local ms = (ceil_div(lease, SECOND) + 1) * 1000
    if st.held_before == 0 then redis.call('PEXPIRE', key, ms) else redis.call('PEXPIRE', key, ms, 'GT') end
  end
  if st.spent > 0 then
    -- Spend counters outlive their period by the settle window, so a late settle still finds them.
    spend(prefix .. 'd:' .. day, st.spent, ceil_div(to_day, SECOND) + window)
    spend(prefix .. 'm:' .. month, st.spent, ceil_div(to_month, SECOND) + window)
  end
  -- The balance has no TTL: in a scaled-out deployment this key is the money.
  if st.drawn > 0 then redis.call('DECRBY', prefix .. 'bal', st.drawn) end
end
return replies
