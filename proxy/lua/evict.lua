#!lua flags=no-writes,allow-stale
local policy, samples, want = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local volatile = string.sub(policy, 1, 9) == 'volatile-'
local out, seen = {}, {}
for n = 1, want do
  local best, score
  for i = 1, samples do
    local k = redis.call('RANDOMKEY')
    if not k then return out end
    if not seen[k] then
      local e = redis.call('PEXPIRETIME', k)
      if not volatile or e >= 0 then
        local sc
        if policy == 'allkeys-lru' or policy == 'volatile-lru' then sc = redis.call('OBJECT', 'IDLETIME', k)
        elseif policy == 'allkeys-lfu' or policy == 'volatile-lfu' then sc = 255 - redis.call('OBJECT', 'FREQ', k)
        elseif policy == 'volatile-ttl' then sc = -e
        else sc = 0 end
        if best == nil or sc > score then best, score = k, sc end
      end
    end
  end
  if best == nil then return out end
  seen[best] = true
  out[#out+1] = best
end
return out