-- spend: a scope's spend of the current UTC day and month, by Redis's clock.
-- ARGV: key prefix of the scope, and from tests only a clock (us since the epoch).
-- Returns {today, this month}.
local sec, now = now_of(ARGV[2])
local day, month = periods(sec, now)
return {tonumber(redis.call('GET', ARGV[1] .. 'd:' .. day) or '0'),
        tonumber(redis.call('GET', ARGV[1] .. 'm:' .. month) or '0')}
