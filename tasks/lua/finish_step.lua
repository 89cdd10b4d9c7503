-- Fencing: finish attempt ARGV[2] of step ARGV[1] only if that attempt is `running`.
-- Records the result, decides which dependants became ready, skips the dependants of a
-- step that failed under on_error=fail, and appends run_finished when nothing is left.
-- ARGV[1] step   ARGV[2] attempt   ARGV[3] status: succeeded | failed
-- ARGV[4] message   ARGV[5] output JSON ("" when failed)
-- ARGV[6] the output fragment for step_finished ('"output":...' or '"output_truncated":true')
-- ARGV[7] retry delay in seconds, "" when the failure is final
-- Returns {outcome, EMITTED, ready, run status} where outcome is "finished", "retrying"
-- or "stale"; ready is {step, attempt, timeout_s, delay_s, ...}.
local step, attempt, status, message = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', RUN, 'status') ~= 'running' or step_get(step, 'status') ~= 'running'
    or step_get(step, 'attempt') ~= attempt then
  return {'stale', {}, {}, ''}
end
local ready = {}

if status == 'failed' and ARGV[7] ~= '' then
  emit('step_retrying', '"step":"' .. step .. '","attempt":' .. attempt .. ',"message":'
    .. str(message) .. ',"delay_s":' .. ARGV[7])
  step_set(step, 'message', message)
  make_ready(step, tonumber(attempt) + 1, ready)
  ready[#ready] = ARGV[7]
  return {'retrying', EMITTED, ready, 'running'}
end

local function close_step(name, st, msg, output, started_at, duration, output_fragment, att)
  step_set(name, 'status', st, 'finished_at', NOW_ISO, 'message', msg, 'output', output,
    'duration_ms', duration)
  redis.call('HINCRBY', RUN, 'remaining', -1)
  local fields = '"step":"' .. name .. '","attempt":' .. att .. ',"status":"' .. st
    .. '","started_at":' .. str(started_at) .. ',"finished_at":"' .. NOW_ISO
    .. '","duration_ms":' .. duration .. ',"message":' .. str(msg) .. ',' .. output_fragment
  emit('step_finished', fields)
end

local duration = string.format('%.3f', (NOW_US - tonumber(step_get(step, 'started_us'))) / 1000)
local output = ARGV[5]
if output == '' then output = 'null' end
close_step(step, status, message, output, step_get(step, 'started_at'), duration, ARGV[6],
  attempt)

local on_error = step_get(step, 'on_error')
if status == 'succeeded' or on_error == 'continue' then
  for _, dep in ipairs(split_csv(step_get(step, 'next'))) do
    local waiting = redis.call('HINCRBY', STEPS, dep .. '.waiting', -1)
    if waiting == 0 and step_get(dep, 'status') == 'pending' then
      make_ready(dep, 1, ready)
    end
  end
else
  if not redis.call('HGET', RUN, 'failed_step') then
    redis.call('HSET', RUN, 'failed_step', step, 'failed_message', message)
  end
  -- Everything downstream of a failed step can never run: skip it now, depth first.
  local stack = split_csv(step_get(step, 'next'))
  while #stack > 0 do
    local dep = table.remove(stack)
    if step_get(dep, 'status') == 'pending' then
      close_step(dep, 'skipped', 'skipped: needs failed step ' .. step, 'null', cjson.null,
        '0', '"output":null', '0')
      for _, next_dep in ipairs(split_csv(step_get(dep, 'next'))) do
        stack[#stack + 1] = next_dep
      end
    end
  end
end

if tonumber(redis.call('HGET', RUN, 'remaining')) == 0 then
  local failed_step = redis.call('HGET', RUN, 'failed_step')
  if failed_step then
    finish_run('failed', 'step_failed', 'step ' .. failed_step .. ' failed: '
      .. redis.call('HGET', RUN, 'failed_message'))
  else
    finish_run('succeeded', '', '')
  end
end
return {'finished', EMITTED, ready, redis.call('HGET', RUN, 'status')}
