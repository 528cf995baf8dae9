local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = math.max(tonumber(ARGV[2]), 1)
local want = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local horizon = now + interval * burst
local available = 0
if horizon > tat then available = math.floor((horizon - tat) / interval) end
local granted = math.min(want, available)
if granted <= 0 then
  return {0, math.max(tat + interval - horizon, 1)}
end
local new_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(math.ceil((new_tat - now) / 1000), 1))
return {granted, 0}
