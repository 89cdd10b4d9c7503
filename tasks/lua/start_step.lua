-- Fencing: start attempt ARGV[2] of step ARGV[1] only if that attempt is `ready`.
-- ARGV[1] step   ARGV[2] attempt   ARGV[3] worker name   ARGV[4] Celery task id
-- ARGV[5] execution token: unique to one execution of one message, so that the same
--         call retried after a lost reply is recognised (and answered again) rather
--         than taken for a second execution
-- ARGV[6] the incarnation of the worker node (see tasks/workers.py), "" if unknown
-- ARGV[7] the input member(s) of step_started: '"input":<JSON>', or
--         '"input_truncated":true' when too big for an event, or "" when the input could
--         not be resolved (the attempt fails at once)
-- ARGV[8] the resolved input JSON the snapshot keeps ("" for none, or too big)
-- ARGV[9] "1" when the resolved input was too big for the snapshot, else "0"
-- Returns {"started", EMITTED}, or {"stale", status, attempt} when the attempt was
-- already taken or the run ended. The first step of a queued run to start starts the
-- run: `run_started` (with this worker) comes before its `step_started`, once, since
-- the run is `running` from then on. What the attempt runs on is read before, by
-- attempt_inputs.lua, so that its resolved input is recorded here, with its start.
local step, attempt = ARGV[1], ARGV[2]
local run_status = redis.call('HGET', RUN, 'status')
local status = step_get(step, 'status')
local function granted()
  return {'started', EMITTED}
end
if run_status == 'running' and status == 'running' and step_get(step, 'attempt') == attempt
    and ARGV[5] ~= '' and step_get(step, 'token') == ARGV[5] then
  return granted()  -- this very call, applied once already: its events stand
end
if (run_status ~= 'running' and run_status ~= 'queued') or status ~= 'ready'
    or step_get(step, 'attempt') ~= attempt then
  fail_if_state_lost()
  return {'stale', status or '', step_get(step, 'attempt') or ''}
end
if run_status == 'queued' then
  index_status('queued', 'running')
  unwatch_dispatch(nil)  -- a run created by an earlier version owed its own start
  redis.call('HSET', RUN, 'status', 'running', 'started_at', NOW_ISO, 'worker', ARGV[3])
  emit('run_started', '"scenario_id":' .. str(redis.call('HGET', RUN, 'scenario_id'))
    .. ',"worker":' .. str(ARGV[3]))
end
local resumed = step_get(step, 'resumed_reason')
if resumed and resumed ~= '' then
  -- This attempt takes over one whose execution was lost: say who took the run over.
  redis.call('HSET', RUN, 'worker', ARGV[3])
  emit('run_resumed', '"worker":' .. str(ARGV[3]) .. ',"reason":"' .. resumed .. '"')
  step_set(step, 'resumed_reason', '')
end
unwatch_dispatch(step)
watch_running(step, attempt, ARGV[3], ARGV[6])
step_set(step, 'status', 'running', 'started_at', NOW_ISO, 'started_us', NOW_US,
  'worker', ARGV[3], 'task_id', ARGV[4], 'token', ARGV[5], 'incarnation', ARGV[6],
  'emitted', '0', 'progress', '0', 'message', '', 'resolved_input', ARGV[8] or '',
  'resolved_input_truncated', ARGV[9] or '0')
record_attempt(step, attempt, 'running', '', '')
local tool = step_get(step, 'tool')  -- null for a kind that calls no tool
local input = ARGV[7] or ''
if input ~= '' then input = ',' .. input end
emit('step_started', '"step":"' .. step .. '","attempt":' .. attempt .. ',"tool":'
  .. (tool and str(tool) or 'null') .. ',"worker":' .. str(ARGV[3]) .. input)
return granted()
