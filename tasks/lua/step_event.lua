-- Append step_progress and step_log events of a running attempt, in order (fenced like
-- finish_step). One call carries a batch, so a chatty step costs one round trip per
-- batch rather than per event.
-- ARGV[1] step   ARGV[2] attempt
-- then five values per event:
--   event type, fields fragment, progress fraction ("" for a log line), progress
--   message, and the event's number within the attempt (1, 2, ...): a number already
--   recorded is this call retried after a lost reply, and is not appended twice
-- Returns EMITTED, empty when the attempt is no longer running.
local step, attempt = ARGV[1], ARGV[2]
if redis.call('HGET', RUN, 'status') ~= 'running' or step_get(step, 'status') ~= 'running'
    or step_get(step, 'attempt') ~= attempt then
  return {}
end
local emitted = tonumber(step_get(step, 'emitted') or '0')
local progress, message
for i = 3, #ARGV, 5 do
  local number = tonumber(ARGV[i + 4])
  if number > emitted then
    emitted = number
    if ARGV[i + 2] ~= '' then
      progress, message = ARGV[i + 2], ARGV[i + 3]
    end
    emit(ARGV[i], ARGV[i + 1])
  end
end
step_set(step, 'emitted', tostring(emitted))
if progress then
  step_set(step, 'progress', progress, 'message', message)
end
return EMITTED
