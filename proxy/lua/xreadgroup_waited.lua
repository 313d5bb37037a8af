for _, k in ipairs(KEYS) do
if redis.call('TYPE', k).ok ~= 'stream' then return redis.error_reply('UNBLOCKED the stream key no longer exists') end
local found = false
for _, g in ipairs(redis.call('XINFO', 'GROUPS', k)) do if g[2] == ARGV[2] then found = true end end
if not found then return redis.error_reply('NOGROUP the consumer group this client was blocked on no longer exists') end
end
