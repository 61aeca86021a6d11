-- headroom: what each limit of one scope has left, taking nothing. The script only reads: a
-- bucket whose limit changed is converted here, for the answer, and left stored as it was; a
-- concurrency lease that ran out is skipped in the count, not removed.
--
-- ARGV: key prefix of the scope, "rpm,itpm,otpm,concurrency,daily,monthly,prepaid" ("" =
--       unlimited; prepaid "1"/"0"), then from tests only a clock (us since the epoch).
-- Returns "limit,capacity,remaining,reset" for each limit that is set, in the order of the
-- argument, then the balance: all one comma-separated string, as reserve's report.

local base, limits = ARGV[1], split(ARGV[2], 7)
local sec, now = now_of(ARGV[3])
local day, month, to_day, to_month = periods(sec, now)

local out = {}
local function left(name, capacity, remaining, reset)
  out[#out + 1] = name
  out[#out + 1] = capacity == '' and '' or int(capacity)
  out[#out + 1] = int(remaining)
  out[#out + 1] = reset
end

local shorts, caps = load(base .. 'bx', now)
for i, name in ipairs(BUCKETS) do
  local capacity = tonumber(limits[i])
  if capacity ~= nil then
    local short, was = shorts[i], caps[i]
    if was ~= nil and was ~= capacity then short = convert(short, was, capacity) end
    if short <= 0 or capacity == 0 then
      left(name, capacity, capacity, '0.000000')
    else
      local token, rate = units(capacity)
      left(name, capacity, capacity - ceil_div(short, token), seconds(ceil_div(short, rate)))
    end
  end
end
local conc = tonumber(limits[4])
if conc ~= nil then
  -- Live leases end after now; reserve drops the others before it counts.
  left('concurrency', conc, conc - redis.call('ZCOUNT', base .. 'cx', '(' .. int(now), '+inf'), '')
end
local daily, monthly = tonumber(limits[5]), tonumber(limits[6])
if daily ~= nil then
  left('daily', daily, daily - tonumber(redis.call('GET', base .. 'd:' .. day) or '0'), seconds(to_day))
end
if monthly ~= nil then
  left('monthly', monthly, monthly - tonumber(redis.call('GET', base .. 'm:' .. month) or '0'), seconds(to_month))
end
if limits[7] == '1' then
  left('balance', '', tonumber(redis.call('GET', base .. 'bal') or '0'), '')
end
return table.concat(out, ',')
