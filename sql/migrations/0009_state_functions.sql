-- sitemap-worker schema, version 0009: every status change the worker makes is a named,
-- guarded function.
--
-- Before, claim, complete, renew, progress and detach were functions, but fail, retry and
-- release were UPDATEs written in sql/queries.sql, and failing a job whose lease expired
-- on its last attempt was a statement inside the claim. Now each is a function whose
-- guard is in its WHERE clause (only the owner of a 'processing' job moves it), so
-- sql/schema.sql lists every transition in one place. Same statements, same answers:
-- the named queries keep their names, parameters and results. plpgsql, as the others,
-- so each session plans them once.

-- processing -> failed: a permanent error, or the last attempt failed.
CREATE OR REPLACE FUNCTION sitemap_worker_fail(p_id bigint, p_owner text, p_error text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET status = 'failed', error = p_error, owner = NULL, lease_expires_at = NULL
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- processing -> pending: a transient error with attempts left, runnable again after a
-- backoff.
CREATE OR REPLACE FUNCTION sitemap_worker_retry(p_id bigint, p_owner text, p_error text,
                                                p_delay_seconds double precision)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET status = 'pending', error = p_error, owner = NULL, lease_expires_at = NULL,
           run_at = now() + make_interval(secs => p_delay_seconds)
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- processing -> pending: a worker shutting down hands its unfinished jobs back without
-- burning an attempt.
CREATE OR REPLACE FUNCTION sitemap_worker_release(p_owner text, p_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE jobs
       SET status = 'pending', owner = NULL, lease_expires_at = NULL,
           attempts = greatest(attempts - 1, 0), run_at = now(),
           error = 'released by a worker shutting down'
     WHERE id = ANY(p_ids) AND owner = p_owner AND status = 'processing'
    RETURNING id;
END $$;

-- processing -> failed: a job whose worker was lost (lease expired, or no lease at all)
-- with no attempts left, and no children to wait for. The claim calls it first, at its
-- own statement time `p_now`; a worker's own running jobs (`p_running`) are left to its
-- heartbeat. At most 100 per claim, so a backlog never makes one claim slow.
CREATE OR REPLACE FUNCTION sitemap_worker_fail_lost(p_owner text, p_running bigint[],
                                                    p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs
       SET status = 'failed', owner = NULL, lease_expires_at = NULL,
           error = CASE WHEN lease_expires_at IS NULL
                        THEN format('processing with no lease and no attempts left (%s of %s)',
                                    attempts, max_attempts)
                        ELSE format('worker lost while running (lease expired) on attempt %s of %s',
                                    attempts, max_attempts) END
     WHERE id = ANY(ARRAY(SELECT x.id FROM jobs x
                           WHERE x.status = 'processing'
                             AND (x.lease_expires_at < p_now OR x.lease_expires_at IS NULL)
                             AND x.attempts >= x.max_attempts AND x.children_total = 0
                             AND (x.owner IS DISTINCT FROM p_owner OR x.id <> ALL(p_running))
                           LIMIT 100
                             FOR UPDATE SKIP LOCKED));
END $$;

-- pending -> processing, and processing (lease lost) -> processing: the claim, as in 0008,
-- with its first statement now sitemap_worker_fail_lost.
CREATE OR REPLACE FUNCTION sitemap_worker_claim(p_owner text, p_limit integer,
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
    PERFORM sitemap_worker_fail_lost(p_owner, p_running, ts);
    picked := ARRAY(SELECT x.id FROM jobs x
                     WHERE x.status = 'processing'
                       AND (x.lease_expires_at < ts OR x.lease_expires_at IS NULL)
                       AND (x.attempts < x.max_attempts OR x.children_total > 0)
                       AND x.children_ended >= x.children_total
                       AND (x.owner IS DISTINCT FROM p_owner OR x.id <> ALL(p_running))
                     ORDER BY x.lease_expires_at NULLS FIRST
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
    -- A job at the attempts limit cannot be counted once more: it fails, with a message,
    -- in the same statement, and is not returned.
    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs j
           SET status = CASE WHEN j.attempts < 10000 THEN 'processing' ELSE 'failed' END,
               owner = CASE WHEN j.attempts < 10000 THEN p_owner END,
               attempts = least(j.attempts + 1, 10000),
               started_at = ts,
               error = CASE WHEN j.attempts < 10000 THEN NULL
                            ELSE 'attempts reached the limit of 10000: set attempts = 0 to run it again' END,
               lease_expires_at = CASE WHEN j.attempts < 10000
                                       THEN ts + make_interval(secs => p_lease_seconds) END
         WHERE j.id = ANY(picked)
        RETURNING j.id, j.job_type, j.payload, j.attempts, j.max_attempts, j.priority,
                  j.parent_id, j.status, greatest(j.created_at, j.run_at) AS runnable
    )
    SELECT c.id, c.job_type, c.payload::text, c.attempts, c.max_attempts, c.priority,
           c.parent_id,
           CASE WHEN isfinite(c.runnable)
                THEN greatest(extract(epoch FROM ts - c.runnable)::float8, 0) ELSE 0 END
      FROM claimed c
     WHERE c.status = 'processing';
END $$;
