-- sitemap-worker schema, version 0006: a worker never re-claims a job it is still running.
--
-- A lease expires while its worker is alive when the worker cannot reach the database for
-- longer than the lease (a restart, a failover, a network cut). When it can again, its run
-- of the job is still going. Another worker may take the job over (the first run's guarded
-- writes then touch nothing and it stops), but the same worker must not: both runs would
-- share the owner, so both runs' guarded writes would pass, and the job would run twice side
-- by side with its outcome written by whichever ended first. The claim is told which jobs
-- the worker is running (`p_running`) and leaves those to its heartbeat, which renews them.
-- A job of its own that it is no longer running (it gave up writing the outcome) is
-- re-claimed as usual, by anyone.

DROP FUNCTION IF EXISTS sitemap_worker_claim(text, integer, double precision);

CREATE FUNCTION sitemap_worker_claim(p_owner text, p_limit integer,
                                     p_lease_seconds double precision,
                                     p_running bigint[] DEFAULT '{}')
RETURNS TABLE (id bigint, job_type text, payload text, attempts integer,
               max_attempts integer, priority integer, parent_id bigint,
               waited double precision)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    ts timestamptz := statement_timestamp();
    picked bigint[];
BEGIN
    -- Small statements rather than one big CTE: each is cheap to plan, and plpgsql keeps
    -- their plans for the session.
    UPDATE jobs
       SET status = 'failed', owner = NULL, lease_expires_at = NULL,
           error = format('worker lost while running (lease expired) on attempt %s of %s',
                          attempts, max_attempts)
     WHERE id = ANY(ARRAY(SELECT x.id FROM jobs x
                           WHERE x.status = 'processing' AND x.lease_expires_at < ts
                             AND x.attempts >= x.max_attempts
                             AND (x.owner IS DISTINCT FROM p_owner OR x.id <> ALL(p_running))
                           LIMIT 100
                             FOR UPDATE SKIP LOCKED));
    picked := ARRAY(SELECT x.id FROM jobs x
                     WHERE x.status = 'processing' AND x.lease_expires_at < ts
                       AND x.attempts < x.max_attempts
                       AND (x.owner IS DISTINCT FROM p_owner OR x.id <> ALL(p_running))
                     ORDER BY x.lease_expires_at
                     LIMIT p_limit
                       FOR UPDATE SKIP LOCKED);
    IF cardinality(picked) < p_limit THEN
        picked := picked || ARRAY(SELECT x.id FROM jobs x
                                   WHERE x.status = 'pending' AND x.run_at <= ts
                                   ORDER BY x.priority DESC, x.run_at, x.id
                                   LIMIT p_limit - cardinality(picked)
                                     FOR UPDATE SKIP LOCKED);
    END IF;
    IF cardinality(picked) = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE jobs j
       SET status = 'processing', owner = p_owner, attempts = j.attempts + 1,
           started_at = ts, error = NULL,
           lease_expires_at = ts + make_interval(secs => p_lease_seconds)
     WHERE j.id = ANY(picked)
    RETURNING j.id, j.job_type, j.payload::text, j.attempts, j.max_attempts, j.priority,
              j.parent_id,
              greatest(extract(epoch FROM ts - greatest(j.created_at, j.run_at))::float8, 0);
END $$;
