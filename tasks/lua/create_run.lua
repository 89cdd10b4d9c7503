-- Create a run in `queued` state, append `run_queued`, and make its root steps ready:
-- each owes its dispatch (watch index), so that roots the caller never managed to send
-- are sent by the sweeper after the redelivery time. The run becomes `running` when its
-- first step starts (start_step.lua); no task of its own starts it.
-- ARGV[1] run_id            ARGV[2] scenario_id      ARGV[3] input JSON
-- ARGV[4] step order (csv)  ARGV[5] stream MAXLEN    ARGV[6] TTL of a finished run (s)
-- ARGV[7] run_queued fields fragment
-- ARGV[8] redelivery time (ms): a dispatch not started this long after it was owed is
--         sent again by the sweeper
-- ARGV[9] deadline grace (ms): how long past its time limit a running attempt may
--         still be running before the sweeper ends it
-- ARGV[10..] step hash fields and values, flat
-- Returns {created_at in microseconds, EMITTED, ready, old}: ready lists the roots to
-- send, {step, attempt, timeout_s, delay_s, ...}; old, a few runs of the index created
-- longer ago than the TTL, which may have expired (the caller checks them: see
-- tasks/run_index.py), read here to spare the request a round trip. Run ids are new for every request, so a run
-- that exists already was made by this very call, retried after a lost reply: it is
-- answered again as it was created, with the roots that are still owed.
-- Its caller copies run_queued to the all-runs stream once the roots were sent.
COPY_TO_ALL = false
if redis.call('EXISTS', RUN) == 1 then
  local first = redis.call('XRANGE', EVENTS, '-', '+', 'COUNT', 1)[1]
  local ready = {}
  if redis.call('HGET', RUN, 'status') == 'queued' then
    offer_ready_roots(ready)
  end
  return {redis.call('HGET', RUN, 'created_us'), {first[1], first[2][2]}, ready, {}}
end
local order = split_csv(ARGV[4])
redis.call('HSET', RUN, 'run_id', ARGV[1], 'scenario_id', ARGV[2], 'status', 'queued',
  'input', ARGV[3], 'order', ARGV[4], 'maxlen', ARGV[5], 'ttl_s', ARGV[6],
  'created_at', NOW_ISO, 'created_us', string.format('%.0f', NOW_US), 'seq', 0,
  'remaining', #order, 'message', '', 'redeliver_ms', ARGV[8], 'deadline_grace_ms', ARGV[9])
-- unpack() is bounded by the Lua C stack: write the step fields in slices.
local batch = {}
for i = 10, #ARGV do
  batch[#batch + 1] = ARGV[i]
  if #batch == 2000 then
    redis.call('HSET', STEPS, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('HSET', STEPS, unpack(batch)) end
emit('run_queued', ARGV[7])
redis.call('ZADD', PREFIX .. 'runs', string.format('%.0f', NOW_US), ARGV[1])
redis.call('ZADD', PREFIX .. 'runs:scenario:' .. ARGV[2], string.format('%.0f', NOW_US), ARGV[1])
redis.call('HSET', PREFIX .. 'runs:scenario_of', ARGV[1], ARGV[2])
index_status(nil, 'queued')
local ready = {}
advance(ready, nil)
local horizon = string.format('%.0f', NOW_US - tonumber(ARGV[6]) * 1000000)
local old = redis.call('ZRANGEBYSCORE', PREFIX .. 'runs', '-inf', horizon, 'LIMIT', 0, 10)
return {string.format('%.0f', NOW_US), EMITTED, ready, old}
