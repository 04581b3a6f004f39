-- sitemap-worker schema, version 0019: the claim announces its status changes from the rows
-- its UPDATE returned, instead of reading them back from jobs (issue 20).
--
-- The read-back (a GROUP BY over jobs, by id = ANY(...) OR ...) was planned afresh on every
-- claim: with the table's nine indexes to weigh, its custom plan took ~96 us to make and
-- ~20 us to run, a fifth of the claim's server time (pg_stat_statements with
-- track_planning, over a drain of 20,000 jobs). The UPDATE's rows are kept in a jobs[]
-- array instead; the answer and the notifications are read from that array, which plans
-- in a few microseconds and touches no table. What the claim returns and announces is
-- unchanged.

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
    taken_over integer;
    claimed_rows jobs[];
    change record;
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
    taken_over := cardinality(picked);  -- already processing: no status change to announce
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
    -- in the same statement, and is not returned. updated_at and finished_at are set here,
    -- as jobs_touch would, so that trigger is skipped, and the status notifications are
    -- sent below instead of by jobs_notify_status (migration 0015).
    PERFORM set_config('sitemap_worker.status_notified', 'on', true);
    WITH claimed AS (
        UPDATE jobs j
           SET status = CASE WHEN j.attempts < 10000 THEN 'processing' ELSE 'failed' END,
               owner = CASE WHEN j.attempts < 10000 THEN p_owner END,
               attempts = least(j.attempts + 1, 10000),
               started_at = ts,
               updated_at = now(),
               finished_at = CASE WHEN j.attempts < 10000 THEN NULL ELSE now() END,
               error = CASE WHEN j.attempts < 10000 THEN NULL
                            ELSE 'attempts reached the limit of 10000: set attempts = 0 to run it again' END,
               lease_expires_at = CASE WHEN j.attempts < 10000
                                       THEN ts + make_interval(secs => p_lease_seconds) END
         WHERE j.id = ANY(picked)
        RETURNING j AS claimed_row
    )
    SELECT array_agg(c.claimed_row) INTO claimed_rows FROM claimed c;
    PERFORM set_config('sitemap_worker.status_notified', '', true);
    -- Taken-over jobs were processing already: only those that failed here changed status.
    FOR change IN
        SELECT u.status, array_agg(u.id ORDER BY u.id) AS ids
          FROM unnest(claimed_rows) AS u
         WHERE u.id <> ALL(picked[: taken_over]) OR u.status = 'failed'
         GROUP BY u.status
    LOOP
        PERFORM sitemap_worker_notify_status(change.status, change.ids);
    END LOOP;
    RETURN QUERY
    SELECT u.id, u.job_type, u.payload::text, u.attempts, u.max_attempts, u.priority,
           u.parent_id,
           CASE WHEN isfinite(r.runnable)
                THEN greatest(extract(epoch FROM ts - r.runnable)::float8, 0) ELSE 0 END
      FROM unnest(claimed_rows) AS u
     CROSS JOIN LATERAL (SELECT greatest(u.created_at, u.run_at) AS runnable) AS r
     WHERE u.status = 'processing';
END $$;
