-- Shared by every buzz limiter script (prepended to each). Redis's own clock is the only
-- clock, so N buzz processes on N machines agree on buckets and on where a UTC day ends.
--
-- Every sum is exact. Lua numbers are doubles, which hold every whole number up to 2^53
-- exactly, so time is counted in whole microseconds (about 1.8e15 today) and each token bucket
-- in units of which a microsecond and a token are both whole numbers (see `units`). A sum that
-- could pass 2^53 is only ever compared with one that cannot, and rounding keeps that order.

local MINUTE = 60000000 -- microseconds: a bucket refills its whole capacity in a minute
local SECOND = 1000000

-- Now, in whole seconds and in whole microseconds since the epoch: Redis's TIME, or the clock
-- a test passes in (a missing or empty argument means TIME).
local function now_of(given)
  if given ~= nil and given ~= '' then
    local us = tonumber(given)
    return math.floor(us / SECOND), us
  end
  local t = redis.call('TIME')
  local sec = tonumber(t[1])
  return sec, sec * SECOND + tonumber(t[2])
end

-- a / b rounded up, for whole a >= 0 and b > 0 below 2^53. The correction steps make it exact
-- whatever the division's rounding.
local function ceil_div(a, b)
  local q = math.ceil(a / b)
  local r = a - q * b
  if r > 0 then return q + 1 end
  if r <= -b then return q - 1 end
  return q
end

local function gcd(a, b)
  while b > 0 do a, b = b, a % b end
  return a
end

-- A bucket of `capacity` tokens a minute counts in units of which one token is `token` and one
-- microsecond of refill is `rate`: with g = gcd(60e6, capacity), token = 60e6 / g and
-- rate = capacity / g are whole. (A token alone is 60e6 / capacity microseconds, rarely whole.)
-- Exact while a bucket is less than 2^53 / token tokens short of full: 150 million tokens at
-- worst, and far more for a round capacity (a million a minute makes a token 60 units).
local UNITS = {} -- by capacity: each script run computes a capacity's units once
local function units(capacity)
  local known = UNITS[capacity]
  if known == nil then
    local g = gcd(MINUTE, capacity)
    known = {MINUTE / g, capacity / g}
    UNITS[capacity] = known
  end
  return known[1], known[2]
end

-- Howard Hinnant's civil calendar algorithms: Redis's Lua has no os.date.
local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- Where a spend period ends, in epoch seconds. A month is numbered year * 12 + month - 1.
local function day_end(day)
  return (day + 1) * 86400
end

local function month_end(month)
  local next_month = month + 1
  return days_from_civil(math.floor(next_month / 12), next_month % 12 + 1, 1) * 86400
end

-- The UTC day and month (the numbers that key the spend counters) and microseconds until each ends.
local function periods(sec, now)
  local day = math.floor(sec / 86400)
  local y, m = civil_from_days(day)
  local month = y * 12 + m - 1
  return day, month, day_end(day) * SECOND - now, month_end(month) * SECOND - now
end

-- A scope's token buckets, in the order limits are packed, and their fields in the scope's hash:
-- how many units short of full a bucket was at a moment, that moment, and the capacity the
-- units belong to.
local BUCKETS = {'rpm', 'itpm', 'otpm'}
local FIELDS = {{'rpm', 'rpm:t', 'rpm:c'}, {'itpm', 'itpm:t', 'itpm:c'}, {'otpm', 'otpm:t', 'otpm:c'}}
local ALL_FIELDS = {'rpm', 'rpm:t', 'rpm:c', 'itpm', 'itpm:t', 'itpm:c', 'otpm', 'otpm:t', 'otpm:c'}

-- A scope's buckets as stored, in one read: short[j], how many units short of full bucket j is,
-- brought up to `now` at its stored capacity's rate, and cap[j], that capacity. A missing bucket
-- is full (its key expired because it was full): short 0 and no capacity. The clock of a
-- failed-over Redis may step back: no time then passes.
local function load(hash, now)
  local raw = redis.call('HMGET', hash, unpack(ALL_FIELDS))
  local short, cap = {0, 0, 0}, {}
  for j = 1, 3 do
    local s, at, c = tonumber(raw[3 * j - 2]), tonumber(raw[3 * j - 1]), tonumber(raw[3 * j])
    if s ~= nil and at ~= nil and c ~= nil then
      local _, rate = units(c)
      local elapsed = now - at
      if elapsed > 0 then
        -- Compared before subtracting: the product may pass 2^53, but then it exceeds `s`.
        local refill = elapsed * rate
        if refill >= s then s = 0 else s = s - refill end
      end
      short[j], cap[j] = s, c
    end
  end
  return short, cap
end

-- A stored shortfall moved to another capacity's units, the level it leaves kept and cut to
-- the new capacity, rounded up to a whole unit (the safe side): what the in-process limiter
-- does when an operator changes a limit.
local function convert(short, from, to)
  local old_token = units(from)
  local token = units(to)
  local whole = math.floor(short / old_token)
  local part = short - whole * old_token
  short = whole * token + ceil_div(part * token, old_token) + (to - from) * token
  if short < 0 then return 0 end
  return short
end

local function int(x)
  return string.format('%d', x)
end

-- Whole microseconds (>= 0) as decimal seconds, exactly: "8.571429". The Python client reads
-- a decimal number faster than a whole one it would then have to divide.
local function seconds(us)
  return string.format('%d.%06d', math.floor(us / SECOND), us % SECOND)
end

-- Store a scope's buckets at `now` in one write: each j that has a capacity cap[j], short[j]
-- units short of full. Returns how long until the last of them is full, in microseconds (-1
-- with none). Writing all of them at once keeps the hash's lifetime that of its fullest bucket.
local function store(hash, short, cap, now)
  local fields, full_in, at = {}, -1, int(now)
  for j = 1, 3 do
    local capacity = cap[j]
    if capacity ~= nil then
      local s, f = short[j], FIELDS[j]
      local o = #fields
      fields[o + 1], fields[o + 2], fields[o + 3] = f[1], int(s), f[2]
      fields[o + 4], fields[o + 5], fields[o + 6] = at, f[3], int(capacity)
      local _, rate = units(capacity)
      local full = 0
      if rate > 0 then full = ceil_div(s, rate) end
      if full > full_in then full_in = full end
    end
  end
  if #fields > 0 then redis.call('HSET', hash, unpack(fields)) end
  return full_in
end

-- Add `amount` to a spend counter, which lives until `ttl` seconds from now: set when the
-- counter is made (or held nothing), since each later call would set the same end again.
local function spend(key, amount, ttl)
  if redis.call('INCRBY', key, amount) == amount then redis.call('EXPIRE', key, ttl) end
end

-- Make a key live at least `seconds` longer, never shorter: other processes may need more.
local function extend(key, seconds)
  local ms = seconds * 1000
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- A scope's limits travel packed in one argument, and replies come back as one string: the
-- Python client encodes and parses each RESP element slowly, and these scripts are on every
-- request. `count` fields are read with one match, which Lua does far faster than a loop.
local FIELD = '([^,]*)'
local function split(packed, count)
  return {string.match(packed, '^' .. FIELD .. string.rep(',' .. FIELD, count - 1) .. '$')}
end
