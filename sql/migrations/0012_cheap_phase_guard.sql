-- sitemap-worker schema, version 0012: the end-of-phase check no longer writes the job row.
--
-- Until now every phase ended with sitemap_worker_renew_with_progress, an UPDATE of the job
-- row that also renewed the lease. On many small sites that was two thirds of the server's
-- statement time (issue 21): 34 calls per site, each a new row version that is never HOT
-- (lease_expires_at is indexed) and three statement-level triggers with transition tables.
-- The lease is the heartbeat's business alone (every 2 s, for all of a worker's jobs), so a
-- phase now only proves that the job is still the caller's: it share-locks the row until
-- its commit, so a cancel or a take-over waits for the phase (milliseconds) instead of
-- slipping in between the check and the commit. Progress, when the worker's cadence says it
-- is due (about once a second per job), is written by an UPDATE of `progress` alone (and
-- updated_at by jobs_touch): no indexed column changes, so PostgreSQL can update in place.
-- sitemap_worker_renew_with_progress stays for workers of an older version still running
-- during an upgrade; this version never calls it.

CREATE FUNCTION sitemap_worker_guard_phase(p_id bigint, p_owner text, p_progress real)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    held bigint;
BEGIN
    IF p_progress IS NULL THEN
        SELECT id INTO held FROM jobs
         WHERE id = p_id AND owner = p_owner AND status = 'processing'
           FOR SHARE;
    ELSE
        UPDATE jobs SET progress = p_progress
         WHERE id = p_id AND owner = p_owner AND status = 'processing'
        RETURNING id INTO held;
    END IF;
    RETURN held;
END $$;
