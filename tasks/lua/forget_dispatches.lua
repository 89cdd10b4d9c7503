-- Drop a run's owed dispatches from the watch index (its own start and its steps'):
-- before a run that was never sent is deleted (the API undoing a request it answered
-- 503), so that nothing of it is left for the sweeper to find.
-- No ARGV. Returns how many entries were dropped.
local run_id = this_run_id()
if not run_id then return 0 end
return forget_owed(RUN, run_id)
