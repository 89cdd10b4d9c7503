-- What the creator of a queued run owes: the `run_step` tasks of its roots, which it
-- sends after create_run.lua made them ready. Asked when a request died between the
-- two (an abandoned Idempotency-Key claim whose run exists): they are sent again at
-- once rather than after the redelivery time. Sending a root twice is harmless.
-- No ARGV.
-- Returns {status, scenario_id, ready}: status is the run's ("" when it is gone); ready
-- lists the roots still owed, {step, attempt, timeout_s, delay_s, ...}, while the run is
-- queued.
-- A queued run with no ready root was created by an earlier version: its start (a
-- `run_scenario` task) is what is owed.
local status = redis.call('HGET', RUN, 'status')
local ready = {}
if status == 'queued' then
  offer_ready_roots(ready)
end
return {status or '', redis.call('HGET', RUN, 'scenario_id') or '', ready}
