PRELUDE_CORE
local up = false
local function w(f) if f == nil then return nil end return function(keys, args) if not up then up = true setmetatable(t, {__index = redis}) end now = tonumber(table.remove(args) or '') or 0 math.randomseed(0) return f(keys, args) end end
t.register_function = function(a, b) if b == nil and a ~= nil and a.callback ~= nil then a.callback = w(a.callback) return redis.register_function(a) end return redis.register_function(a, w(b)) end
t.log = function(...) return redis.log(...) end
t.LOG_DEBUG, t.LOG_VERBOSE, t.LOG_NOTICE, t.LOG_WARNING, t.REDIS_VERSION, t.REDIS_VERSION_NUM = redis.LOG_DEBUG, redis.LOG_VERBOSE, redis.LOG_NOTICE, redis.LOG_WARNING, redis.REDIS_VERSION, redis.REDIS_VERSION_NUM
return t, ts
