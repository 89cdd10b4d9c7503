-- What a redelivered or duplicated run_step message still owes: if its attempt has
-- ended, the dependants it made ready that no worker has started; if that attempt
-- scheduled a retry, the retry. A crash between recording a step and dispatching its
-- successors is completed this way.
-- ARGV[1] step   ARGV[2] attempt
-- Returns ready: {step, attempt, timeout_s, delay_s, ...}.
local step, attempt = ARGV[1], tonumber(ARGV[2])
local status = step_get(step, 'status')
local current = tonumber(step_get(step, 'attempt') or '0')
local ready = {}
if redis.call('HGET', RUN, 'status') ~= 'running' then return ready end
if status == 'ready' and current == attempt + 1 then
  -- The retry keeps the backoff its failure was given.
  offer(ready, step, current, step_get(step, 'delay_s'))
elseif current == attempt and (status == 'succeeded' or status == 'failed') then
  for _, dep in ipairs(split_csv(step_get(step, 'next'))) do
    if step_get(dep, 'status') == 'ready' and step_get(dep, 'attempt') == '1' then
      offer(ready, dep, 1)
    end
  end
end
return ready
