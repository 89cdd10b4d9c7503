-- The sweeper's look at one entry of the watch indexes (see prelude.lua): is what the
-- entry stands for still owed? Entries of runs that ended or vanished are dropped, a
-- run whose step state was lost is failed, and an owed dispatch is re-armed for the
-- next redelivery time before the caller sends it again.
-- ARGV[1] index: "running" (a running attempt) | "dispatch" (an owed dispatch)
-- ARGV[2] the entry as it is in the index
-- ARGV[3] step ("" for a queued run's own dispatch)   ARGV[4] attempt ("" if unknown)
-- Returns {verdict, EMITTED, attempt, timeout_s}; verdict is "gone" (entry dropped),
-- "state_lost" (run failed), "overdue" (the attempt is still running past its
-- deadline), "send_run" (the queued run's start is owed again: a run created by an
-- earlier version, which owed a `run_scenario` task), "send_step" (the
-- step's attempt is owed again) or "stale" (entry dropped: the thing moved on).
local index, entry, step, attempt = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = index == 'running' and RUNNING or DISPATCHES
local status = redis.call('HGET', RUN, 'status')
if not status or is_terminal(status) then
  redis.call('ZREM', key, entry)
  if not status then
    -- Leftovers of a run whose hash is gone: let them expire like a finished run's.
    for _, k in ipairs({STEPS, EVENTS}) do redis.call('EXPIRE', k, 604800, 'NX') end
  end
  return {'gone', {}, '', ''}
end
if fail_if_state_lost() then
  redis.call('ZREM', key, entry)
  return {'state_lost', EMITTED, '', ''}
end
local function drop(verdict)
  redis.call('ZREM', key, entry)
  return {verdict, {}, '', ''}
end
if index == 'running' then
  if step_get(step, 'status') == 'running' and step_get(step, 'attempt') == attempt then
    return {'overdue', {}, attempt, step_get(step, 'timeout_s')}
  end
  return drop('stale')
end
local again = NOW_MS + run_field_number('redeliver_ms', DEFAULT_REDELIVER_MS)
if step == '' then
  if status ~= 'queued' then return drop('stale') end
  redis.call('ZADD', key, again, entry)
  return {'send_run', {}, '', ''}
end
-- A queued run's roots are owed from its creation: it starts when the first one does.
if (status ~= 'running' and status ~= 'queued') or step_get(step, 'status') ~= 'ready' then
  return drop('stale')
end
redis.call('ZADD', key, again, entry)
return {'send_step', {}, step_get(step, 'attempt'), step_get(step, 'timeout_s')}
