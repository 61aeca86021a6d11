-- reserve: check every limit of every scope, then consume them all, or nothing. One script is
-- one atomic step in Redis, so there is no window between check and consume for concurrent
-- requests (from any number of buzz processes) to slip through.
--
-- ARGV: marker, id, settle window (s), concurrency lease (us), input, output, cost, n,
--       concurrency retry hint (us), then per scope: key prefix,
--       "rpm,itpm,otpm,concurrency,daily,monthly,prepaid,reported" ("" = unlimited; flags "1"/"0";
--       reported "0": only the balance is in the reply's tail, as the response headers need),
--       then, from tests only, a clock (us since the epoch) in place of Redis's TIME
-- Keys are built here from the scope prefixes because spend keys depend on Redis's clock.
-- Returns "ok,day,month" or "no,scope,limit,retry_after", each followed by
--         ",scope,limit,capacity,remaining,reset" per limit of every scope; or "dup,day,month"
--         (all one comma-separated string; retry_after and reset in seconds, to the microsecond).

local marker, id = ARGV[1], ARGV[2]
local window, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local ask_in, ask_out, cost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local HINT = tonumber(ARGV[9])

-- A client retry after a lost reply must not reserve twice: the marker says it went through.
local prior = redis.call('GET', marker)
if prior then return 'dup,' .. prior end

local sec, now = now_of(ARGV[10 + 2 * n])
local day, month, to_day, to_month = periods(sec, now)

local scopes = {}
for i = 1, n do
  local limits = split(ARGV[9 + 2 * i])
  scopes[i] = {
    base = ARGV[8 + 2 * i],
    buckets = {{'rpm', tonumber(limits[1]), 1}, {'itpm', tonumber(limits[2]), ask_in},
               {'otpm', tonumber(limits[3]), ask_out}},
    conc = tonumber(limits[4]), daily = tonumber(limits[5]), monthly = tonumber(limits[6]),
    prepaid = limits[7] == '1',
    reported = limits[8] ~= '0',
    shorts = {},
  }
end

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

for i, s in ipairs(scopes) do
  local names, changed = {}, {}
  for _, b in ipairs(s.buckets) do
    if b[2] ~= nil then names[#names + 1] = b[1] end
  end
  local loaded = load(s.base .. 'bx', names, now)
  for _, b in ipairs(s.buckets) do
    local name, capacity, need = b[1], b[2], b[3]
    if capacity ~= nil then
      local short, was = loaded[name][1], loaded[name][2]
      if was ~= nil and was ~= capacity then
        -- A changed limit applies from now, even to a request it turns away: from this
        -- moment on, the bucket refills at the new rate.
        short = convert(short, was, capacity)
        changed[#changed + 1] = {name, short, capacity}
      end
      s.shorts[name] = short
      local token, rate = units(capacity)
      b[4], b[5] = token, rate -- for the report and the take below
      if need > capacity then
        turn_away(i, name, nil)
      else
        -- How far the bucket is from holding `need`: it holds its capacity once full.
        local over = short + need * token - capacity * token
        if over > 0 then
          -- Rounded up to the microsecond: a retry at the advertised moment is never early.
          if rate == 0 then turn_away(i, name, nil) else turn_away(i, name, ceil_div(over, rate)) end
        end
      end
    end
  end
  if #changed > 0 then keep(s.base .. 'bx', store(s.base .. 'bx', changed, now)) end
  if s.conc ~= nil then
    -- A lease that ran out belongs to a request whose process stopped renewing it: it died,
    -- or the request ended and its settlement was lost.
    redis.call('ZREMRANGEBYSCORE', s.base .. 'cx', '-inf', now)
    s.inflight = redis.call('ZCARD', s.base .. 'cx')
    if s.inflight >= s.conc then
      if s.conc > 0 then turn_away(i, 'concurrency', HINT) else turn_away(i, 'concurrency', nil) end
    end
  end
  -- Spend and balance in one read.
  local money = redis.call('MGET', s.base .. 'd:' .. day, s.base .. 'm:' .. month, s.base .. 'bal')
  s.today, s.month = tonumber(money[1] or '0'), tonumber(money[2] or '0')
  if s.prepaid then
    s.balance = tonumber(money[3] or '0')
    if s.balance - cost < 0 then turn_away(i, 'balance', nil) end
  end
  -- Monthly first: when both are spent, waiting for tomorrow would not help.
  for _, c in ipairs({{'monthly', s.monthly, s.month, to_month}, {'daily', s.daily, s.today, to_day}}) do
    local name, cap, spent, wait = c[1], c[2], c[3], c[4]
    if cap ~= nil and spent + cost > cap then
      if cost > cap then turn_away(i, name, nil) else turn_away(i, name, wait) end
    end
  end
end

-- What every limit of every scope has left, as the reply's tail: after the take, or, with a
-- rejection, as it stands (nothing was taken).
local function report(out)
  local function left(i, name, capacity, remaining, reset)
    out[#out + 1] = int(i)
    out[#out + 1] = name
    out[#out + 1] = capacity == '' and '' or int(capacity)
    out[#out + 1] = int(remaining)
    out[#out + 1] = reset
  end
  for i, s in ipairs(scopes) do
    if s.reported then
      for _, b in ipairs(s.buckets) do
        local name, capacity = b[1], b[2]
        if capacity ~= nil then
          local short = s.shorts[name]
          if short <= 0 or capacity == 0 then
            left(i, name, capacity, capacity, '0.000000')
          else
            -- Whole tokens left (rounded down), and the time to full rounded up to the microsecond.
            left(i, name, capacity, capacity - ceil_div(short, b[4]), seconds(ceil_div(short, b[5])))
          end
        end
      end
      if s.conc ~= nil then left(i, 'concurrency', s.conc, s.conc - s.inflight, '') end
      if s.daily ~= nil then left(i, 'daily', s.daily, s.daily - s.today, seconds(to_day)) end
      if s.monthly ~= nil then left(i, 'monthly', s.monthly, s.monthly - s.month, seconds(to_month)) end
    end
    if s.prepaid then left(i, 'balance', '', s.balance, '') end
  end
  return table.concat(out, ',')
end

local verdict = never or latest or busy
if verdict then return report({'no', int(verdict[1]), verdict[2], verdict[3]}) end

for _, s in ipairs(scopes) do
  local taken = {}
  for _, b in ipairs(s.buckets) do
    local name, capacity, need = b[1], b[2], b[3]
    if capacity ~= nil then
      local short = s.shorts[name] + need * b[4]
      s.shorts[name] = short
      taken[#taken + 1] = {name, short, capacity}
    end
  end
  local full_in = store(s.base .. 'bx', taken, now)
  if full_in >= 0 then keep(s.base .. 'bx', full_in) end
  if s.conc ~= nil then
    -- A lease, renewed by the holder's process while the request is in flight (renew.lua).
    redis.call('ZADD', s.base .. 'cx', int(now + lease), id)
    extend(s.base .. 'cx', ceil_div(lease, SECOND) + 1)
    s.inflight = s.inflight + 1
  end
  if cost > 0 then
    -- Spend counters outlive their period by the settle window, so a late settle still finds them.
    spend(s.base .. 'd:' .. day, cost, ceil_div(to_day, SECOND) + window)
    spend(s.base .. 'm:' .. month, cost, ceil_div(to_month, SECOND) + window)
  end
  s.today, s.month = s.today + cost, s.month + cost
  if s.prepaid then
    -- The balance has no TTL: in a scaled-out deployment this key is the money.
    s.balance = redis.call('DECRBY', s.base .. 'bal', cost)
  end
end

redis.call('SET', marker, int(day) .. ',' .. int(month), 'EX', window)
return report({'ok', int(day), int(month)})
