-- Shared by every buzz limiter script (prepended to each). Redis's own clock is the only
-- clock, so N buzz processes on N machines agree on buckets and on where a UTC day ends.

local EPSILON = 1e-9 -- refill arithmetic may land a hair short of a whole token on time

local function now_of()
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[1]) + tonumber(t[2]) / 1e6
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

-- The UTC day and month (the numbers that key the spend counters) and seconds until each ends.
local function periods(sec, now)
  local day = math.floor(sec / 86400)
  local y, m = civil_from_days(day)
  local month = y * 12 + m - 1
  return day, month, day_end(day) - now, month_end(month) - now
end

-- A bucket's level now; a missing one is full (its key expired because it was full).
local function refill(hash, name, capacity, now)
  local raw = redis.call('HMGET', hash, name, name .. ':t')
  local level, at = tonumber(raw[1]), tonumber(raw[2])
  if level == nil or at == nil then return capacity end
  return math.min(capacity, level + math.max(0, now - at) * capacity / 60)
end

-- Seconds until a bucket at this level is full again.
local function to_full(level, capacity)
  if capacity <= 0 then return 0 end
  return math.max(0, (capacity - level) * 60 / capacity)
end

-- Keep a bucket hash exactly as long as it is not yet full: a full bucket is a missing one.
local function keep(hash, seconds)
  local ms = math.ceil(seconds * 1000) + 1000
  local ttl = redis.call('PTTL', hash)
  if ttl < ms then redis.call('PEXPIRE', hash, ms) end
end

-- A scope's limits travel packed in one argument, and replies come back as one string: the
-- Python client encodes and parses each RESP element slowly, and these scripts are on every request.
local function split(packed)
  local out = {}
  for field in string.gmatch(packed .. ',', '([^,]*),') do out[#out + 1] = field end
  return out
end

local function int(x)
  return string.format('%d', x)
end

local function micro_up(seconds)
  return string.format('%.6f', math.ceil(seconds * 1e6) / 1e6)
end
