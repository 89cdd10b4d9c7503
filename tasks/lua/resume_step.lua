-- Take over a running attempt whose execution is gone (its worker process or node was
-- lost, or its worker is shutting down): the step becomes ready again as the next
-- attempt, and the worker that starts it appends `run_resumed` (start_step.lua). Steps
-- that already finished are kept. After `max_resumes` takeovers of the same step it
-- fails, and with it the run, for that reason: counted per step, so that one lost node
-- running several steps of a run never uses up the run's chances by itself.
-- ARGV[1] step   ARGV[2] attempt   ARGV[3] reason: worker_lost | shutdown
-- ARGV[4] max resumes
-- ARGV[5] the attempt's Celery task id, or "" for any
-- ARGV[6] the worker that held the attempt, or "" for any
-- Returns {outcome, EMITTED, ready, run status}: outcome is "resumed", "closed" (the
-- step was ended instead: resumed too often, or the run is being cancelled) or "stale" (the attempt is not running as described: nothing was changed). A call
-- repeated after it took effect answers "resumed" again with no events.
local step, attempt, reason = ARGV[1], ARGV[2], ARGV[3]
local function held_as_described()
  return (ARGV[5] == '' or step_get(step, 'task_id') == ARGV[5])
    and (ARGV[6] == '' or step_get(step, 'worker') == ARGV[6])
end
if redis.call('HGET', RUN, 'status') == 'running' and step_get(step, 'status') == 'ready'
    and tonumber(step_get(step, 'attempt')) == tonumber(attempt) + 1
    and step_get(step, 'resumed_reason') == reason and held_as_described() then
  -- Resumed already, by this call retried after a lost reply or by a peer: the new
  -- attempt is offered again (dispatching it twice is harmless, starting it is fenced).
  local ready = {}
  offer(ready, step, step_get(step, 'attempt'))
  return {'resumed', {}, ready, 'running'}
end
if redis.call('HGET', RUN, 'status') ~= 'running' or step_get(step, 'status') ~= 'running'
    or step_get(step, 'attempt') ~= attempt
    or not held_as_described() then
  return {'stale', {}, {}, ''}
end
local ready = {}
if redis.call('HGET', RUN, 'cancel_requested') then
  close_step(step, 'cancelled', 'its worker was lost while the run was being cancelled',
    'null', '"output":null', reason)
  advance(ready, step, 'cancelled')
  return {'closed', EMITTED, ready, redis.call('HGET', RUN, 'status')}
end
local resumes = redis.call('HINCRBY', STEPS, step .. '.resumes', 1)
if resumes > tonumber(ARGV[4]) then
  local message = 'lost its worker (' .. reason .. ') after ' .. (resumes - 1) .. ' resumes'
  close_step(step, 'failed', message, 'null', '"output":null', reason)
  advance(ready, step, 'failed', message, reason)
  return {'closed', EMITTED, ready, redis.call('HGET', RUN, 'status')}
end
record_attempt(step, attempt, 'interrupted', reason == 'shutdown'
  and 'handed back: its worker was shutting down' or 'taken over: its worker was lost', reason)
step_set(step, 'resumed_reason', reason)
make_ready(step, tonumber(attempt) + 1, ready)
return {'resumed', EMITTED, ready, 'running'}
