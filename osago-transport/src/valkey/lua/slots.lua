local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder = ARGV[1]
local cap = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local ttl = tonumber(ARGV[5])
local all = redis.call('HGETALL', KEYS[1])
local others_held = 0
local starving = false
local active = 1
local last_expiry = now + ttl
for i = 1, #all, 2 do
  local field = all[i]
  if field ~= holder then
    local held, w, exp = string.match(all[i + 1], '^(%d+):(%d+):(%d+)$')
    held = tonumber(held)
    w = tonumber(w)
    exp = tonumber(exp)
    if held == nil or w == nil or exp == nil or exp <= now then
      redis.call('HDEL', KEYS[1], field)
    else
      others_held = others_held + held
      if w > held then starving = true end
      if w > 0 then active = active + 1 end
      if exp > last_expiry then last_expiry = exp end
    end
  end
end
local free = math.max(cap - others_held, 0)
local target = want
if starving then target = math.min(want, math.ceil(cap / active)) end
local granted = math.min(target, free)
local held = math.max(granted, floor)
redis.call('HSET', KEYS[1], holder, string.format('%d:%d:%d', held, want, now + ttl))
redis.call('PEXPIRE', KEYS[1], last_expiry - now)
local contended = 0
if starving or want > granted then contended = 1 end
return {granted, held, contended}
