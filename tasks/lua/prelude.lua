-- Shared by every run script: prepended to each one when the scripts are loaded.
--
-- Every run script receives the same three keys, all with the run's hash tag:
--   KEYS[1]  stepstream:run:{<id>}          hash: run fields
--   KEYS[2]  stepstream:run:{<id>}:steps    hash: "<step>.<field>" per step
--   KEYS[3]  stepstream:run:{<id>}:events   stream: the run's events
--
-- Besides the run's own keys, the scripts keep the shared indexes that let readers
-- find runs and attempts without walking every run: the listing indexes (by status,
-- by scenario, by both) and the watch indexes of running attempts and of dispatches.
-- They are named by the same rules as in tasks/keys.py (tested there).
--
-- Event JSON is assembled here from fragments that the Python side encoded, so user
-- data (inputs, outputs, messages) never passes through cjson, whose number precision
-- and empty-table handling would alter it.

local RUN, STEPS, EVENTS = KEYS[1], KEYS[2], KEYS[3]

local function iso_time(sec, usec)
  -- Howard Hinnant's civil_from_days: Redis Lua has no os.date.
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, usec)
end

local NOW = redis.call('TIME')
local NOW_US = tonumber(NOW[1]) * 1000000 + tonumber(NOW[2])
local NOW_ISO = iso_time(tonumber(NOW[1]), tonumber(NOW[2]))
local NOW_MS = math.floor(NOW_US / 1000)

local PREFIX = 'stepstream:'
--- Sorted set: running attempts scored by the time (ms) by which each must have ended.
local RUNNING = PREFIX .. 'attempts:running'
--- Sorted set: dispatches owed (a ready step, a new run's roots included; the start of a
--- queued run created by an earlier version) scored by the time (ms) at which, if
--- nothing has started them, the sweeper sends them again.
local DISPATCHES = PREFIX .. 'attempts:dispatch'
--- Defaults for runs created before their settings were recorded in the run hash.
local DEFAULT_REDELIVER_MS, DEFAULT_DEADLINE_GRACE_MS = 300000, 40000
--- The longest pause before a retry, whatever the policy's backoff grows to (a Celery
--- countdown beyond it would overflow, or sit in a worker's memory for days).
local MAX_RETRY_DELAY_S = 3600

--- Events appended by this call, as {id, json, id, json, ...}, returned to the caller.
local EMITTED = {}
--- The all-runs stream (SPEC §5), and whether this call copies its events there. The
--- copy is made here, in the call that appends the event: an XADD costs Redis a few
--- microseconds, while a copy made by the caller afterwards costs it a round trip and
--- a thread. create_run.lua alone leaves it to its caller, who copies `run_queued`
--- once the run's roots were sent, so that a run undone never shows up there.
local ALL_EVENTS = PREFIX .. 'events'
local COPY_TO_ALL = true

--- A JSON string. Besides what cjson escapes, U+2028, U+2029 and U+0085 are escaped:
--- legal in JSON, they end a line for JavaScript and some SSE and line readers.
local function str(s)
  local encoded = cjson.encode(s)
  encoded = encoded:gsub('\226\128\168', '\\u2028'):gsub('\226\128\169', '\\u2029')
  return (encoded:gsub('\194\133', '\\u0085'))
end

--- The run's id and stream cap, read once per script call (a batch emits many events).
local EMIT_RUN_ID, EMIT_MAXLEN

--- An event's JSON: the fixed members every event begins with, then `fields`.
local function event_body(etype, seq, fields)
  if not EMIT_RUN_ID then
    EMIT_RUN_ID = redis.call('HGET', RUN, 'run_id')
    EMIT_MAXLEN = redis.call('HGET', RUN, 'maxlen') or '100000'
  end
  local body = '{"schema_version":1,"type":"' .. etype .. '","run_id":"' .. EMIT_RUN_ID
    .. '","seq":' .. seq .. ',"ts":"' .. NOW_ISO .. '"'
  if fields ~= '' then body = body .. ',' .. fields end
  return body .. '}'
end

--- XADD one event's JSON to the run's stream and return its id.
local function append_event(body)
  local id = redis.call('XADD', EVENTS, 'MAXLEN', '~', EMIT_MAXLEN, '*', 'data', body)
  if COPY_TO_ALL then
    -- As delivered to clients: the event's `id` is its id in the run's stream. Best
    -- effort (pcall): a copy Redis refuses is lost, the call goes on.
    redis.pcall('XADD', ALL_EVENTS, 'MAXLEN', '~', EMIT_MAXLEN, '*', 'data',
      body:sub(1, -2) .. ',"id":"' .. id .. '"}')
  end
  EMITTED[#EMITTED + 1] = id
  EMITTED[#EMITTED + 1] = body
  return id
end

--- Append one event: bump seq, XADD, and record last_event_id in the same call.
local function emit(etype, fields)
  local seq = redis.call('HINCRBY', RUN, 'seq', 1)
  local id = append_event(event_body(etype, seq, fields))
  redis.call('HSET', RUN, 'last_event_id', id)
  return id
end

--- Append many events, `{type, fields, type, fields, ...}`, as `emit` would one by one,
--- with seq and last_event_id written once: a chatty step's batch costs an XADD per
--- event and nothing more.
local function emit_all(events)
  if #events == 0 then return end
  local seq = tonumber(redis.call('HGET', RUN, 'seq') or '0')
  local id
  for i = 1, #events, 2 do
    seq = seq + 1
    id = append_event(event_body(events[i], seq, events[i + 1]))
  end
  redis.call('HSET', RUN, 'seq', string.format('%.0f', seq), 'last_event_id', id)
end

local function step_get(step, field)
  return redis.call('HGET', STEPS, step .. '.' .. field)
end

local function run_field_number(field, default)
  return tonumber(redis.call('HGET', RUN, field) or '') or default
end

local function this_run_id()
  return redis.call('HGET', RUN, 'run_id')
end

--- Move the run to `status` in the listing indexes (`old` is nil for a new run).
local function index_status(old, status)
  local run_id = this_run_id()
  local scenario = PREFIX .. 'runs:scenario:' .. (redis.call('HGET', RUN, 'scenario_id') or '')
  if old then
    redis.call('ZREM', PREFIX .. 'runs:status:' .. old, run_id)
    redis.call('ZREM', scenario .. ':status:' .. old, run_id)
  end
  local score = redis.call('HGET', RUN, 'created_us') or '0'
  redis.call('ZADD', PREFIX .. 'runs:status:' .. status, score, run_id)
  redis.call('ZADD', scenario .. ':status:' .. status, score, run_id)
end

--- Owe a dispatch of `step` (or of the run itself when `step` is nil): if no worker
--- has started it `delay_s` plus the redelivery time from now, it is sent again.
local function watch_dispatch(step, delay_s)
  local member = this_run_id()
  if step then member = member .. '\t' .. step end
  local due = NOW_MS + math.floor((delay_s or 0) * 1000)
    + run_field_number('redeliver_ms', DEFAULT_REDELIVER_MS)
  redis.call('ZADD', DISPATCHES, due, member)
end

local function unwatch_dispatch(step)
  local member = this_run_id()
  if step then member = member .. '\t' .. step end
  redis.call('ZREM', DISPATCHES, member)
end

--- Index a step's attempt as running until its deadline: its time limit plus the grace
--- of the hard limit and of the sweeper. The member names the attempt, its holder and
--- when it started, so that finding lost attempts needs no other read.
local function watch_running(step, attempt, worker, incarnation, started_ms)
  started_ms = started_ms or NOW_MS
  local member = table.concat({this_run_id(), step, attempt, string.format('%d', started_ms),
    incarnation, worker}, '\t')
  local deadline = NOW_MS + math.floor(tonumber(step_get(step, 'timeout_s')) * 1000)
    + run_field_number('deadline_grace_ms', DEFAULT_DEADLINE_GRACE_MS)
  redis.call('ZADD', RUNNING, deadline, member)
  redis.call('HSET', STEPS, step .. '.running_member', member)
end

local function unwatch_running(step)
  local member = step_get(step, 'running_member')
  if member and member ~= '' then
    redis.call('ZREM', RUNNING, member)
    redis.call('HSET', STEPS, step .. '.running_member', '')
  end
end

local function step_set(step, ...)
  local args = {...}
  local flat = {}
  for i = 1, #args, 2 do
    flat[#flat + 1] = step .. '.' .. args[i]
    flat[#flat + 1] = args[i + 1]
  end
  redis.call('HSET', STEPS, unpack(flat))
end

local function split_csv(s)
  local out = {}
  if s then
    for item in string.gmatch(s, '[^,]+') do out[#out + 1] = item end
  end
  return out
end

--- Drop run `run_id`'s owed dispatches (its own start and its steps', by the step
--- order of its hash `run`) from the watch index; returns how many were dropped.
local function forget_owed(run, run_id)
  local dropped = redis.call('ZREM', DISPATCHES, run_id)
  for _, step in ipairs(split_csv(redis.call('HGET', run, 'order'))) do
    dropped = dropped + redis.call('ZREM', DISPATCHES, run_id .. '\t' .. step)
  end
  return dropped
end

local function is_terminal(status)
  return status == 'succeeded' or status == 'failed' or status == 'cancelled'
end

--- Offer attempt `attempt` of `step` to the caller, who sends it to a worker after
--- `delay_s` (a string, "0" for at once). `ready` is the flat list every script returns:
--- {step, attempt, timeout_s, delay_s, ...} (tasks/run_records.py reads it).
local function offer(ready, step, attempt, delay_s)
  ready[#ready + 1] = step
  ready[#ready + 1] = tostring(attempt)
  ready[#ready + 1] = step_get(step, 'timeout_s')
  ready[#ready + 1] = delay_s or '0'
end

--- Offer again every step whose first attempt is ready and not started: a queued run's
--- roots (made ready with the run, create_run.lua), whose messages may never have left.
local function offer_ready_roots(ready)
  for _, step in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
    if step_get(step, 'status') == 'ready' and step_get(step, 'attempt') == '1' then
      offer(ready, step, 1)
    end
  end
end

--- How each step kind enters a new attempt, by the kind's name (the step's `kind`
--- field). A kind whose attempts run in a worker needs no entry: the default marks the
--- step `ready`, owes its dispatch and offers it. A kind that waits in Redis instead
--- (for a signal, a time, a slot) or ends at once adds its own in `lua/kinds/<kind>.lua`,
--- loaded after this prelude and before every script; it may call `advance` (defined
--- below) when it closes the step.
local ENTER_KIND = {}

--- Mark a step ready to run as `attempt` after `delay_s` (a string, "0" for at once).
local function make_ready(step, attempt, ready, delay_s)
  local enter = ENTER_KIND[step_get(step, 'kind') or 'tool']
  if enter then return enter(step, attempt, ready, delay_s) end
  unwatch_running(step)
  step_set(step, 'status', 'ready', 'attempt', attempt)
  watch_dispatch(step, tonumber(delay_s or '0'))
  offer(ready, step, attempt, delay_s)
end

--- How many attempts of a step its record keeps (the latest): a step retried and taken
--- over again and again cannot grow its record without bound.
local ATTEMPTS_KEPT = 50

--- The running attempt of `step` so far, in ms (a JSON number).
local function running_ms(step)
  return string.format('%.3f', (NOW_US - tonumber(step_get(step, 'started_us'))) / 1000)
end

--- Record attempt `attempt` of `step` as it stands, in its own field of the steps hash
--- (`<step>.attempts.<n>`, the JSON the snapshot's `attempts` shows): `running` as it
--- starts, then how it ended (succeeded, failed, cancelled, or interrupted when taken
--- over), with `reason` when it ended other than normally or another attempt followed
--- (retry, timeout, worker_lost, shutdown, cancelled; '' for none) and a retry's
--- `delay_s`. Called by the same script call that changes the step's state.
local function record_attempt(step, attempt, status, message, reason, delay_s)
  local finished_at, duration = 'null', 'null'
  if status ~= 'running' then
    finished_at, duration = '"' .. NOW_ISO .. '"', running_ms(step)
  end
  if reason == '' and status == 'cancelled' then reason = 'cancelled' end
  local record = '{"attempt":' .. attempt .. ',"status":"' .. status .. '","worker":'
    .. str(step_get(step, 'worker') or '') .. ',"started_at":'
    .. str(step_get(step, 'started_at') or '') .. ',"finished_at":' .. finished_at
    .. ',"duration_ms":' .. duration .. ',"message":' .. str(message or '') .. ',"reason":'
    .. (reason ~= '' and str(reason) or 'null') .. ',"delay_s":' .. (delay_s or 'null') .. '}'
  redis.call('HSET', STEPS, step .. '.attempts.' .. attempt, record)
  local dropped = tonumber(attempt) - ATTEMPTS_KEPT
  if dropped > 0 then redis.call('HDEL', STEPS, step .. '.attempts.' .. dropped) end
end

--- The `traceback` member of a failure's event ('' when the failure had none: a
--- timeout, a cancellation, a tool's declared error), after a comma.
local function traceback_member(traceback)
  if not traceback or traceback == '' then return '' end
  return ',"traceback":' .. str(traceback)
end

--- Close a step for good and append its step_finished. `started_at` and `duration` are
--- nil for a step that never started (skipped or cancelled while waiting); a running
--- attempt's record ends with it, for `reason` (see `record_attempt`; nil for none). A
--- failure keeps its `traceback` (nil or '' for none) as the step's latest.
local function close_step(name, status, message, output, output_fragment, reason, traceback)
  local attempt = step_get(name, 'attempt') or '0'
  local started_at, duration = cjson.null, nil
  if status ~= 'skipped' and step_get(name, 'status') == 'running' then
    started_at = step_get(name, 'started_at')
    duration = running_ms(name)
    record_attempt(name, attempt, status, message, reason or '')
  end
  unwatch_running(name)
  unwatch_dispatch(name)
  step_set(name, 'status', status, 'finished_at', NOW_ISO, 'message', message,
    'output', output, 'duration_ms', duration or '')
  local failure = ''
  if status == 'failed' then
    step_set(name, 'traceback', traceback or '')
    failure = traceback_member(traceback)
  end
  redis.call('HINCRBY', RUN, 'remaining', -1)
  emit('step_finished', '"step":"' .. name .. '","attempt":' .. attempt .. ',"status":"'
    .. status .. '","started_at":' .. str(started_at) .. ',"finished_at":"' .. NOW_ISO
    .. '","duration_ms":' .. (duration or 'null') .. ',"message":' .. str(message) .. ','
    .. output_fragment .. failure)
end

--- Remember the first step whose failure fails the run, and why.
local function mark_failed(step, message, reason)
  if not redis.call('HGET', RUN, 'failed_step') then
    redis.call('HSET', RUN, 'failed_step', step, 'failed_message', message, 'fail_reason', reason)
  end
end

--- Everything downstream of a failed step can never run: skip it, depth first.
local function skip_downstream(step)
  local stack = split_csv(step_get(step, 'next'))
  while #stack > 0 do
    local dep = table.remove(stack)
    if step_get(dep, 'status') == 'pending' then
      close_step(dep, 'skipped', 'skipped: needs failed step ' .. step, 'null', '"output":null')
      for _, next_dep in ipairs(split_csv(step_get(dep, 'next'))) do
        stack[#stack + 1] = next_dep
      end
    end
  end
end

--- Record run_finished once, and let the run's keys expire.
local function finish_run(status, reason, message)
  index_status(redis.call('HGET', RUN, 'status'), status)
  unwatch_dispatch(nil)
  redis.call('HSET', RUN, 'status', status, 'finished_at', NOW_ISO, 'message', message,
    'reason', reason)
  local fields = '"status":"' .. status .. '","finished_at":"' .. NOW_ISO .. '","message":'
    .. str(message)
  if reason ~= '' then fields = fields .. ',"reason":"' .. reason .. '"' end
  emit('run_finished', fields)
  local ttl = redis.call('HGET', RUN, 'ttl_s')
  for _, key in ipairs({RUN, STEPS, EVENTS}) do
    redis.call('EXPIRE', key, ttl)
  end
end

--- A run whose steps are gone from Redis (evicted under memory pressure, or deleted by
--- hand) can never move on: fail it with reason `state_lost` rather than leave it
--- running. Returns true when the run was found so.
local function fail_if_state_lost()
  local status = redis.call('HGET', RUN, 'status')
  if not status or is_terminal(status) or redis.call('EXISTS', STEPS) == 1 then
    return false
  end
  redis.call('HSET', RUN, 'remaining', 0)
  finish_run('failed', 'state_lost', "the run's step state is missing from Redis "
    .. '(evicted or deleted); Redis must run with maxmemory-policy noeviction')
  return true
end

--- When no step is left, finish the run with the status its steps and requests imply.
local function finish_if_done()
  if tonumber(redis.call('HGET', RUN, 'remaining')) ~= 0
      or is_terminal(redis.call('HGET', RUN, 'status')) then
    return
  end
  local failed_step = redis.call('HGET', RUN, 'failed_step')
  if redis.call('HGET', RUN, 'cancel_requested') then
    finish_run('cancelled', 'cancelled', 'cancelled by request')
  elseif failed_step then
    finish_run('failed', redis.call('HGET', RUN, 'fail_reason') or 'step_failed',
      'step ' .. failed_step .. ' failed: ' .. redis.call('HGET', RUN, 'failed_message'))
  else
    finish_run('succeeded', '', '')
  end
end

--- Steps closed and not yet carried on from, each {step or false, status, message,
--- reason}, and whether `advance` is draining them.
local ADVANCE_QUEUE, ADVANCING = {}, false

--- The one place that decides what runs next. `closed` is the step whose end was just
--- recorded with `status` (and `message`, and `reason` when it failed), or nil when the
--- run has just started and its roots are due. Appends to `ready` what may now run, and
--- finishes the run when no step is left.
---
--- The rules, all here: nothing becomes ready once cancelling; a step is ready when the
--- last of its needs closed and released it; a success releases the dependants, and so
--- does a failure of the step's own work (`step_failed`) under `on_error: continue`; any
--- other failure fails the run and skips everything downstream of it. A step taken over
--- too often (`worker_lost`, `shutdown`) fails the run whatever its `on_error`: the step
--- never ended on its own, so its dependants have no output, not even an error, to go on.
---
--- A kind that closes a step as soon as it is due (see `ENTER_KIND`) calls this from
--- inside it: the step is queued and carried on from by the loop already running, so a
--- chain of ten thousand such steps is a loop, not ten thousand nested calls.
local function advance(ready, closed, status, message, reason)
  ADVANCE_QUEUE[#ADVANCE_QUEUE + 1] = {closed or false, status, message, reason}
  if ADVANCING then return end
  ADVANCING = true
  local i = 1
  while ADVANCE_QUEUE[i] do
    local step, step_status, step_message, step_reason = unpack(ADVANCE_QUEUE[i])
    ADVANCE_QUEUE[i] = false
    i = i + 1
    if redis.call('HGET', RUN, 'cancel_requested') then
      -- Everything still waiting was cancelled with the run: nothing becomes ready.
    elseif not step then
      for _, name in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
        if step_get(name, 'status') == 'pending' and step_get(name, 'waiting') == '0' then
          make_ready(name, 1, ready)
        end
      end
    elseif step_status == 'succeeded'
        or (step_reason == 'step_failed' and step_get(step, 'on_error') == 'continue') then
      for _, dep in ipairs(split_csv(step_get(step, 'next'))) do
        local waiting = redis.call('HINCRBY', STEPS, dep .. '.waiting', -1)
        if waiting == 0 and step_get(dep, 'status') == 'pending' then
          make_ready(dep, 1, ready)
        end
      end
    elseif step_status == 'failed' then
      mark_failed(step, step_message, step_reason)
      skip_downstream(step)
    end
  end
  ADVANCE_QUEUE, ADVANCING = {}, false
  finish_if_done()
end
