-- sitemap-worker schema, version 0017: a status index the claim does not write (issue 20).
--
-- jobs_status_idx (status, id) took an entry on every status change: the claim's
-- pending -> processing and the completion's processing -> completed are non-HOT updates,
-- so each wrote a new index entry for the new row version. Its 'processing' entries served
-- nothing the other indexes cannot: processing rows are bounded by the workers' slots, and
-- jobs_leases_idx (lease_expires_at) WHERE status = 'processing' already holds exactly them,
-- so a list or count of processing jobs reads that small index and sorts a handful of rows.
-- The index now leaves 'processing' out, and the claim writes one index entry fewer per job.
-- 'pending' stays in: a backlog of millions is listed newest first by this index, which
-- jobs_runnable_idx (priority, run_at, id order) cannot do without sorting the backlog.

DROP INDEX jobs_status_idx;
CREATE INDEX jobs_status_idx ON jobs (status, id) WHERE status <> 'processing';
