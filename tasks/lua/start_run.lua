-- Move a queued run to `running`, append `run_started` and make its roots ready: the
-- start of a run created by an earlier version, whose `stepstream.run_scenario` message
-- may still be in the broker (runs are now started by their first step, start_step.lua).
-- The roots of a run created since are ready already: they are offered again.
-- ARGV[1] worker name
-- Returns {outcome, EMITTED, ready} where outcome is "started", "running" (already
-- started: first attempts not yet started are offered again, so that a redelivered
-- message completes a dispatch that a crash interrupted), "finished" (the run had
-- already finished) or "missing"; ready is {step, attempt, timeout_s, delay_s, ...}.
local status = redis.call('HGET', RUN, 'status')
if not status then return {'missing', {}, {}} end
if is_terminal(status) then return {'finished', {}, {}} end
if fail_if_state_lost() then return {'finished', EMITTED, {}} end
local ready = {}
if status == 'queued' then
  index_status('queued', 'running')
  unwatch_dispatch(nil)
  redis.call('HSET', RUN, 'status', 'running', 'started_at', NOW_ISO, 'worker', ARGV[1])
  local scenario_id = redis.call('HGET', RUN, 'scenario_id')
  emit('run_started', '"scenario_id":' .. str(scenario_id) .. ',"worker":' .. str(ARGV[1]))
  offer_ready_roots(ready)
  advance(ready, nil)
  return {'started', EMITTED, ready}
end
for _, step in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
  if step_get(step, 'waiting') == '0' and step_get(step, 'status') == 'ready'
      and step_get(step, 'attempt') == '1' then
    offer(ready, step, 1)
  end
end
return {'running', EMITTED, ready}
