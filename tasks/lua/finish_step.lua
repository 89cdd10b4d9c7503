-- Fencing: finish attempt ARGV[2] of step ARGV[1] only if that attempt is `running`.
-- Records the result; retries a failure while the step's policy allows and the run is
-- not being cancelled; then the decider (`advance`, prelude.lua) makes ready what may
-- run next, or fails the run, and appends run_finished when no step is left.
-- ARGV[1] step   ARGV[2] attempt   ARGV[3] status: succeeded | failed | cancelled
-- ARGV[4] message   ARGV[5] output JSON ("" unless succeeded)
-- ARGV[6] the output fragment for step_finished ('"output":...' or '"output_truncated":true')
-- ARGV[7] why the attempt ended other than normally: "timeout" or ""
-- ARGV[8] the traceback of the exception the tool raised, "" when none
-- Returns {outcome, EMITTED, ready, run status}: outcome is "recorded" (the step closed;
-- the run may go on or have finished with it), "retrying", "stale" or "state_lost";
-- ready is {step, attempt, timeout_s, delay_s, ...}.
local step, attempt, status, message = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', RUN, 'status') ~= 'running' or step_get(step, 'status') ~= 'running'
    or step_get(step, 'attempt') ~= attempt then
  if fail_if_state_lost() then return {'state_lost', EMITTED, {}, 'failed'} end
  return {'stale', {}, {}, ''}
end
local cancelling = redis.call('HGET', RUN, 'cancel_requested')
if status == 'cancelled' and not cancelling then status = 'failed' end
local ready = {}

local n = tonumber(attempt)
if status == 'failed' and not cancelling and n < tonumber(step_get(step, 'max_attempts')) then
  local delay = math.min(MAX_RETRY_DELAY_S, tonumber(step_get(step, 'backoff_s'))
    * tonumber(step_get(step, 'backoff_factor')) ^ (n - 1))
  local delay_s = string.format('%.6g', delay)
  local traceback = ARGV[8] or ''
  emit('step_retrying', '"step":"' .. step .. '","attempt":' .. attempt .. ',"message":'
    .. str(message) .. ',"delay_s":' .. delay_s .. traceback_member(traceback))
  record_attempt(step, attempt, 'failed', message, 'retry', delay_s)
  step_set(step, 'message', message, 'delay_s', delay_s, 'traceback', traceback)
  make_ready(step, n + 1, ready, delay_s)
  return {'retrying', EMITTED, ready, 'running'}
end

local output = ARGV[5]
if output == '' then output = 'null' end
close_step(step, status, message, output, ARGV[6], ARGV[7] or '', ARGV[8])
advance(ready, step, status, message, 'step_failed')
return {'recorded', EMITTED, ready, redis.call('HGET', RUN, 'status')}
