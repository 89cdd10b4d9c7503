-- Append step_progress and step_log events of a running attempt, in order (fenced like
-- finish_step). One call carries a batch, so a chatty step costs one round trip per
-- batch rather than per event.
-- ARGV[1] step   ARGV[2] attempt
-- ARGV[3] the number of the batch's first event within the attempt (1, 2, ...; the
--         others follow it one by one): a number already recorded is this call retried
--         after a lost reply, and its event is not appended twice
-- ARGV[4] the batch's last progress fraction and ARGV[5] its message ("" and "": the
--         batch holds no step_progress), recorded on the step
-- then two values per event: its type and its fields fragment
-- Returns how many events were appended: 0 when the attempt is no longer running.
local step, attempt = ARGV[1], ARGV[2]
if redis.call('HGET', RUN, 'status') ~= 'running' or step_get(step, 'status') ~= 'running'
    or step_get(step, 'attempt') ~= attempt then
  return 0
end
local emitted = tonumber(step_get(step, 'emitted') or '0')
local number = tonumber(ARGV[3]) - 1
local events = {}
for i = 6, #ARGV, 2 do
  number = number + 1
  if number > emitted then
    events[#events + 1] = ARGV[i]
    events[#events + 1] = ARGV[i + 1]
  end
end
if #events == 0 then
  return 0
end
emit_all(events)
-- The last event is new whenever any is (a retried call repeats a prefix of a batch),
-- so the batch's last progress is the newest.
step_set(step, 'emitted', string.format('%.0f', number))
if ARGV[4] ~= '' then
  step_set(step, 'progress', ARGV[4], 'message', ARGV[5])
end
-- Not the events themselves: a chatty step's writer has no use for them.
return #events / 2
