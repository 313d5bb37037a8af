local cur = '0'
repeat
  local r = redis.call('SCAN', cur, 'COUNT', 1000)
  cur = r[1]
  for _, k in ipairs(r[2]) do
    local s = redis.call('PEXPIRETIME', k)
    if s >= 0 and s < SHIFT then redis.call('PEXPIREAT', k, string.format('%d', s + SHIFT)) end
  end
until cur == '0'
