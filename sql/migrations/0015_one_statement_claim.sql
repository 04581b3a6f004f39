-- sitemap-worker schema, version 0015: less server work and fewer round trips per job
-- (issue 20).
--
-- * sitemap_worker_end_and_claim: a worker's queued completions and its next claim in ONE
--   statement, which the worker sends as its own implicit transaction (two round trips,
--   where BEGIN; SET LOCAL ...; complete; claim; COMMIT took six). A claim that ends no
--   job commits without waiting for the WAL flush, as before (a claim lost in a server
--   crash is only a runnable job again); one that ends jobs is durable.
-- * The heartbeat's sitemap_worker_renew commits the same way without asking for it.
-- * jobs_touch runs only when the statement left updated_at alone or finished_at does not
--   match the status: the claim and the completion set both themselves, and so pay for no
--   plpgsql trigger call per row. Any other UPDATE (psql, the API) is kept as before.
-- * jobs_created_idx (created_at, migration 0001) goes: nothing reads through it (every
--   list walks the primary key or an (…, id) index), and every claim and completion, being
--   non-HOT updates, wrote an entry into it.

DROP INDEX jobs_created_idx;

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
    -- in the same statement, and is not returned. updated_at and finished_at are set here,
    -- as jobs_touch would, so that trigger is skipped (migration 0015).
    RETURN QUERY
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

CREATE OR REPLACE FUNCTION sitemap_worker_complete(p_owner text, p_ids bigint[], p_results text[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    -- Rows locked in id order, as sitemap_worker_renew does: a renewal and a completion
    -- of the same worker's jobs in flight at once never deadlock (migration 0013).
    PERFORM 1 FROM jobs WHERE id = ANY(p_ids) AND owner = p_owner ORDER BY id
        FOR NO KEY UPDATE;
    RETURN QUERY
    UPDATE jobs j
       SET status = 'completed', progress = 1, result = done.result::jsonb, error = NULL,
           owner = NULL, lease_expires_at = NULL, updated_at = now(), finished_at = now()
      FROM unnest(p_ids, p_results) AS done (id, result)
     WHERE j.id = done.id AND j.owner = p_owner AND j.status = 'processing'
    RETURNING j.id;
END $$;

CREATE OR REPLACE FUNCTION sitemap_worker_renew(p_owner text, p_ids bigint[],
                                     p_lease_seconds double precision)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    -- A renewal lost in a server crash costs nothing the next one does not redo: its
    -- transaction (the worker's implicit one) commits without waiting for the WAL flush.
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Rows locked in id order, as sitemap_worker_complete does: a renewal and a completion
    -- of the same worker's jobs in flight at once never deadlock (migration 0013).
    PERFORM 1 FROM jobs WHERE id = ANY(p_ids) AND owner = p_owner ORDER BY id
        FOR NO KEY UPDATE;
    RETURN QUERY
    UPDATE jobs
       SET lease_expires_at = statement_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE id = ANY(p_ids) AND owner = p_owner AND status = 'processing'
    RETURNING id;
END $$;

-- A worker's completions and its next claim in one statement, run as its own implicit
-- transaction. Rows with `claimed` false are the completions written (the others were not
-- the caller's any more); rows with `claimed` true are the jobs claimed, as
-- sitemap_worker_claim returns them. Completions first: their rows are locked in id order
-- (sitemap_worker_complete), the claim only takes rows nobody holds (SKIP LOCKED).
CREATE FUNCTION sitemap_worker_end_and_claim(p_owner text, p_done bigint[], p_results text[],
                                             p_limit integer,
                                             p_lease_seconds double precision,
                                             p_running bigint[])
RETURNS TABLE (id bigint, claimed boolean, job_type text, payload text, attempts integer,
               max_attempts integer, priority integer, parent_id bigint,
               waited double precision)
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_done) > 0 THEN
        RETURN QUERY SELECT d.id, false, NULL::text, NULL::text, NULL::integer, NULL::integer,
                            NULL::integer, NULL::bigint, NULL::float8
                       FROM sitemap_worker_complete(p_owner, p_done, p_results) AS d (id);
    ELSE
        -- Nothing ended: a claim lost in a server crash is only a runnable job again.
        PERFORM set_config('synchronous_commit', 'off', true);
    END IF;
    IF p_limit > 0 THEN
        RETURN QUERY SELECT c.id, true, c.job_type, c.payload, c.attempts, c.max_attempts,
                            c.priority, c.parent_id, c.waited
                       FROM sitemap_worker_claim(p_owner, p_limit, p_lease_seconds,
                                                 p_running) AS c;
    END IF;
END $$;

DROP TRIGGER jobs_touch ON jobs;
CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
          OR (NEW.status IN ('pending', 'processing')) = (NEW.finished_at IS NOT NULL))
    EXECUTE FUNCTION jobs_touch();
