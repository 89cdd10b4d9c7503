-- After the cancellation grace: steps still running are closed as `cancelled` and the
-- run ends. Their tasks' later results are refused by the fencing in finish_step.lua.
-- No ARGV.
-- Returns {EMITTED, {task id of each step closed here, ...}}.
local status = redis.call('HGET', RUN, 'status')
if not status or is_terminal(status) or not redis.call('HGET', RUN, 'cancel_requested') then
  return {{}, {}}
end
local tasks = {}
for _, step in ipairs(split_csv(redis.call('HGET', RUN, 'order'))) do
  if step_get(step, 'status') == 'running' then
    tasks[#tasks + 1] = step_get(step, 'task_id') or ''
    close_step(step, 'cancelled', 'terminated: did not stop within the cancellation grace',
      'null', '"output":null')
  end
end
finish_run('cancelled', 'cancelled', 'cancelled by request')
return {EMITTED, tasks}
