-- Withdraw runs whose creator could not tell whether their roots were sent (the
-- broker took the message but its answer was lost): all of them, or none.
-- KEYS: each run's three keys (run, steps, events), in the order of ARGV
-- ARGV: the runs' ids
-- While every run is still `queued` (no step started), each is deleted with its owed
-- dispatches, in this one call: a root message that did arrive finds no run and starts
-- nothing, and none was half run. Once any has started, its message arrived, and so did
-- the others' (one batch): nothing is withdrawn, the runs go on.
-- Returns 1 when withdrawn, 0 when they go on.
for i = 1, #KEYS, 3 do
  if redis.call('HGET', KEYS[i], 'status') ~= 'queued' then
    return 0
  end
end
for n, run_id in ipairs(ARGV) do
  local run, steps, events = KEYS[3 * n - 2], KEYS[3 * n - 1], KEYS[3 * n]
  forget_owed(run, run_id)
  redis.call('DEL', run, steps, events)
end
return 1
