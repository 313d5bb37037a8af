local function gt(a, b) if #a ~= #b then return #a > #b end return a > b end
local function incr(s) local i = #s while i > 0 and s:sub(i, i) == '9' do i = i - 1 end
if i == 0 then return '1' .. string.rep('0', #s) end
return s:sub(1, i - 1) .. string.char(s:byte(i) + 1) .. string.rep('0', #s - i) end
local ms = ARGV[1]
local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
if type(info) == 'table' and not info.err then
for i = 1, #info, 2 do
if info[i] == 'last-generated-id' then
local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
if lms and not gt(ms, lms) then
ms = lms
if lseq == '18446744073709551615' then
if lms == lseq then return redis.error_reply('ERR The stream has exhausted the last possible ID, unable to add more items') end
ms = incr(lms)
end
end
end
end
end
args[tonumber(ARGV[2])] = ms .. '-*'
return redis.pcall('XADD', KEYS[1], unpack(args))