local a = {}
for i = 2, #ARGV do if i < 5 or string.lower(ARGV[i]) ~= 'force' then a[#a + 1] = ARGV[i] end end
local r = redis.pcall('XCLAIM', KEYS[1], unpack(a))
if ARGV[1] == '0' or (type(r) == 'table' and r.err) then return r end
return redis.error_reply('ERR raftproxy could not parse these XCLAIM arguments as redis does, so it claimed nothing')