-- What an attempt of step ARGV[1] will run on, read before it starts, so that the input
-- its tool receives is resolved first and recorded with its start (start_step.lua).
-- Reads only. The values cannot change between this read and the start: the run's
-- input and the step's definition are fixed at creation, and the outputs it references
-- are of steps it needs, which have ended (an ended step never changes).
-- ARGV[1] step
-- Returns {definition JSON, run input JSON, {ref, output, ...}, scenario_id}, or {}
-- when the run or its step is gone.
local step = ARGV[1]
local definition = step_get(step, 'def')
local run_input = redis.call('HGET', RUN, 'input')
if not definition or not run_input then return {} end
local outputs = {}
for _, ref in ipairs(split_csv(step_get(step, 'refs'))) do
  outputs[#outputs + 1] = ref
  outputs[#outputs + 1] = step_get(ref, 'output') or 'null'
end
return {definition, run_input, outputs, redis.call('HGET', RUN, 'scenario_id') or ''}
