-- Cancel a run: no step starts any more, every step still waiting is cancelled, and the
-- run ends `cancelled` at once when nothing is running; otherwise the last running step
-- to finish ends it (finish_step.lua), or enforce_cancel.lua after the grace.
-- No ARGV.
-- Returns {outcome, EMITTED} where outcome is "missing", "finished" (already terminal),
-- "cancelling" (steps still running) or "cancelled".
local status = redis.call('HGET', RUN, 'status')
if not status then return {'missing', {}} end
if is_terminal(status) then return {'finished', {}} end
local running = 0
local first = not redis.call('HGET', RUN, 'cancel_requested')
if first then
  redis.call('HSET', RUN, 'cancel_requested', NOW_ISO)
end
for _, step in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
  local st = step_get(step, 'status')
  if st == 'pending' or st == 'ready' then
    close_step(step, 'cancelled', 'cancelled before it started', 'null', '"output":null')
  elseif st == 'running' then
    running = running + 1
  end
end
if running == 0 then
  finish_run('cancelled', 'cancelled', 'cancelled by request')
  return {'cancelled', EMITTED}
end
return {'cancelling', EMITTED}
