-- Put a run created before the listing and watch indexes existed into them: its status
-- and scenario indexes, and, while it is unfinished, its queued start, ready steps and
-- running attempts (their deadline counted from now). Safe to repeat.
-- No ARGV.
-- Returns "missing", "finished" (indexed for listing; nothing to watch) or "indexed".
local status = redis.call('HGET', RUN, 'status')
if not status then return 'missing' end
local run_id, scenario_id = this_run_id(), redis.call('HGET', RUN, 'scenario_id') or ''
local created = redis.call('HGET', RUN, 'created_us') or '0'
redis.call('ZADD', PREFIX .. 'runs', created, run_id)
redis.call('ZADD', PREFIX .. 'runs:scenario:' .. scenario_id, created, run_id)
redis.call('HSET', PREFIX .. 'runs:scenario_of', run_id, scenario_id)
index_status(nil, status)
if is_terminal(status) then return 'finished' end
if status == 'queued' then watch_dispatch(nil, 0) end
for _, step in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
  local step_status = step_get(step, 'status')
  if step_status == 'ready' then
    watch_dispatch(step, 0)
  elseif step_status == 'running' and (step_get(step, 'running_member') or '') == '' then
    local started_ms = math.floor((tonumber(step_get(step, 'started_us')) or NOW_US) / 1000)
    watch_running(step, step_get(step, 'attempt'), step_get(step, 'worker') or '',
      step_get(step, 'incarnation') or '', started_ms)
  end
end
return 'indexed'
