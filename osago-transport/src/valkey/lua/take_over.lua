local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(expired) do
  -- ARGV[3] is the shard's prefix: the event shares the index's hash tag.
  local event = redis.call('GET', ARGV[3] .. id .. ':event')
  if event then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), id)
    table.insert(out, event)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
