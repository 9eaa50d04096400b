if redis.call('SADD', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('EXPIREAT', KEYS[2], ARGV[4])
if ARGV[5] ~= '' then
  if redis.call('SADD', KEYS[2], ARGV[5]) == 1 then return 1 end
  redis.call('HINCRBY', KEYS[1], 'executions', -1)
else
  redis.call('HINCRBY', KEYS[1], 'executions', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'cpu_us', ARGV[3])
end
redis.call('EXPIREAT', KEYS[1], ARGV[4])
return 1
