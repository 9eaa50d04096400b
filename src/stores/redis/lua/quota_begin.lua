local e = tonumber(redis.call('HGET', KEYS[1], 'executions') or '0')
local c = tonumber(redis.call('HGET', KEYS[1], 'cpu_us') or '0')
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {1, e, c} end
local le = tonumber(ARGV[2])
local lc = tonumber(ARGV[3])
if (le >= 0 and e >= le) or (lc >= 0 and c >= lc) then return {0, e, c} end
e = redis.call('HINCRBY', KEYS[1], 'executions', 1)
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('EXPIREAT', KEYS[2], ARGV[4])
return {1, e, c}
