math.randomseed(0)
PRELUDE_CORE
now = tonumber(table.remove(ARGV) or '') or 0
return setmetatable(t, {__index = redis}), ts
