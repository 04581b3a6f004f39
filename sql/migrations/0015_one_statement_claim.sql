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
-- * The claim and the completion send their own status notifications (the same payloads,
--   from the ids they already hold) and tell jobs_notify_status to skip their statements,
--   which saves its join of the transition tables per statement; the lost-job sweep runs
--   no UPDATE (and so fires no statement trigger) when it finds nothing.
-- * jobs_created_idx (created_at, migration 0001) goes: nothing reads through it (every
--   list walks the primary key or an (…, id) index), and every claim and completion, being
--   non-HOT updates, wrote an entry into it.

DROP INDEX jobs_created_idx;

-- One status notification per 500 ids (the payload limit is 8000 bytes), in the format of
-- jobs_notify_status; the claim and the completion call it for their own rows.
CREATE FUNCTION sitemap_worker_notify_status(p_status text, p_ids bigint[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    FOR chunk IN 0 .. (cardinality(p_ids) - 1) / 500 LOOP
        PERFORM pg_notify('sitemap_worker_status', json_build_object(
            'status', p_status, 'ids', p_ids[chunk * 500 + 1 : chunk * 500 + 500])::text);
    END LOOP;
END $$;

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
    PERFORM set_config('sitemap_worker.status_notified', '', true);
    FOR change IN
        SELECT x.status, array_agg(x.id ORDER BY x.id) AS ids
          FROM jobs x
         WHERE x.id = ANY(picked[taken_over + 1 :])
            OR (x.id = ANY(picked[: taken_over]) AND x.status = 'failed')
         GROUP BY x.status
    LOOP
        PERFORM sitemap_worker_notify_status(change.status, change.ids);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION sitemap_worker_complete(p_owner text, p_ids bigint[], p_results text[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    done_ids bigint[];
BEGIN
    -- Rows locked in id order, as sitemap_worker_renew does: a renewal and a completion
    -- of the same worker's jobs in flight at once never deadlock (migration 0013).
    PERFORM 1 FROM jobs WHERE id = ANY(p_ids) AND owner = p_owner ORDER BY id
        FOR NO KEY UPDATE;
    -- Its own status notification, from the ids it wrote (migration 0015).
    PERFORM set_config('sitemap_worker.status_notified', 'on', true);
    WITH done_rows AS (
        UPDATE jobs j
           SET status = 'completed', progress = 1, result = done.result::jsonb, error = NULL,
               owner = NULL, lease_expires_at = NULL, updated_at = now(), finished_at = now()
          FROM unnest(p_ids, p_results) AS done (id, result)
         WHERE j.id = done.id AND j.owner = p_owner AND j.status = 'processing'
        RETURNING j.id)
    SELECT coalesce(array_agg(d.id ORDER BY d.id), '{}') INTO done_ids FROM done_rows d;
    PERFORM set_config('sitemap_worker.status_notified', '', true);
    IF cardinality(done_ids) > 0 THEN
        PERFORM sitemap_worker_notify_status('completed', done_ids);
    END IF;
    RETURN QUERY SELECT unnest(done_ids);
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

-- The sweep for lost jobs runs on every claim and almost always finds none: no UPDATE
-- then, so no statement trigger fires for nothing.
CREATE OR REPLACE FUNCTION sitemap_worker_fail_lost(p_owner text, p_running bigint[],
                                         p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lost bigint[];
BEGIN
    lost := ARRAY(SELECT x.id FROM jobs x
                   WHERE x.status = 'processing'
                     AND (x.lease_expires_at < p_now OR x.lease_expires_at IS NULL)
                     AND x.attempts >= x.max_attempts AND x.children_total = 0
                     AND (x.owner IS DISTINCT FROM p_owner OR x.id <> ALL(p_running))
                   LIMIT 100
                     FOR UPDATE SKIP LOCKED);
    IF cardinality(lost) = 0 THEN
        RETURN;
    END IF;
    UPDATE jobs
       SET status = 'failed', owner = NULL, lease_expires_at = NULL,
           error = CASE WHEN lease_expires_at IS NULL
                        THEN format('processing with no lease and no attempts left (%s of %s)',
                                    attempts, max_attempts)
                        ELSE format('worker lost while running (lease expired) on attempt %s of %s',
                                    attempts, max_attempts) END
     WHERE id = ANY(lost);
END $$;

DROP TRIGGER jobs_notify_status ON jobs;
CREATE TRIGGER jobs_notify_status AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.status_notified', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_notify_status();

DROP TRIGGER jobs_touch ON jobs;
CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
          OR (NEW.status IN ('pending', 'processing')) = (NEW.finished_at IS NOT NULL))
    EXECUTE FUNCTION jobs_touch();
