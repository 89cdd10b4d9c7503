-- Append step_progress or step_log for a running attempt (fenced like finish_step).
-- ARGV[1] step   ARGV[2] attempt   ARGV[3] event type   ARGV[4] fields fragment
-- ARGV[5] progress fraction ("" for a log line)   ARGV[6] progress message
-- ARGV[7] the event's number within the attempt (1, 2, ...): a number already recorded
--         is this call retried after a lost reply, and is not appended twice
-- Returns EMITTED, empty when the attempt is no longer running or the event is a repeat.
local step, attempt = ARGV[1], ARGV[2]
if redis.call('HGET', RUN, 'status') ~= 'running' or step_get(step, 'status') ~= 'running'
    or step_get(step, 'attempt') ~= attempt then
  return {}
end
local number = tonumber(ARGV[7])
if number <= tonumber(step_get(step, 'emitted') or '0') then
  return {}
end
step_set(step, 'emitted', ARGV[7])
if ARGV[5] ~= '' then
  step_set(step, 'progress', ARGV[5], 'message', ARGV[6])
end
emit(ARGV[3], ARGV[4])
return EMITTED
