-- Fencing: start attempt ARGV[2] of step ARGV[1] only if that attempt is `ready`.
-- ARGV[1] step   ARGV[2] attempt   ARGV[3] worker name   ARGV[4] Celery task id
-- ARGV[5] execution token: unique to one execution of one message, so that the same
--         call retried after a lost reply is recognised (and answered again) rather
--         than taken for a second execution
-- ARGV[6] the incarnation of the worker node (see tasks/workers.py), "" if unknown
-- Returns {"started", EMITTED, definition JSON, run input JSON, {ref, output, ...}}
-- or {"stale", status, attempt} when the attempt was already taken or the run ended.
local step, attempt = ARGV[1], ARGV[2]
local run_status = redis.call('HGET', RUN, 'status')
local status = step_get(step, 'status')
local function granted()
  local outputs = {}
  for _, ref in ipairs(split_csv(step_get(step, 'refs'))) do
    outputs[#outputs + 1] = ref
    outputs[#outputs + 1] = step_get(ref, 'output') or 'null'
  end
  return {'started', EMITTED, step_get(step, 'def'), redis.call('HGET', RUN, 'input'), outputs}
end
if run_status == 'running' and status == 'running' and step_get(step, 'attempt') == attempt
    and ARGV[5] ~= '' and step_get(step, 'token') == ARGV[5] then
  return granted()  -- this very call, applied once already: its events stand
end
if run_status ~= 'running' or status ~= 'ready' or step_get(step, 'attempt') ~= attempt then
  fail_if_state_lost()
  return {'stale', status or '', step_get(step, 'attempt') or ''}
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
  'emitted', '0', 'progress', '0', 'message', '')
local tool = step_get(step, 'tool')  -- null for a kind that calls no tool
emit('step_started', '"step":"' .. step .. '","attempt":' .. attempt .. ',"tool":'
  .. (tool and str(tool) or 'null'))
return granted()
