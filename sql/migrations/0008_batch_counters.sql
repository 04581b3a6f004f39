-- sitemap-worker schema, version 0008: batches that always end, in O(1) per child; no row
-- that can stop the queue; clean retries.
--
-- 1. Per-batch counters. Migration 0003 re-tallied every child of a batch on each child's
--    end (55-70 ms per end at 10,000 children) with the statement's snapshot, so two
--    children ending at once could leave the batch 'processing' forever: the second tally,
--    blocked on the parent row by the first, missed the first child and wrote its stale
--    count. Now each parent keeps `children_total` and `children_ended`, changed by
--    statement triggers with `SET n = n + delta` (one per parent and statement, however
--    many of its children the statement ended) under the parent's row lock: an UPDATE
--    that waits for that lock re-reads the latest row version, so no increment is lost.
--    The batch completes when children_ended reaches children_total; only then is its
--    result built, once, by one query (sitemap_worker_batch_result), in a statement of
--    its own whose snapshot is taken after the lock: it sees every child that ended.
-- 2. A child that moves back from an end state (a person retries it) takes itself off
--    the count; if its batch had completed, the batch re-opens and completes again, with
--    a fresh result, when the child ends. A batch that a person sets back to pending (or
--    processing) from an end state re-runs its failed and cancelled children, keeps the
--    completed ones, and completes when all have ended (at once, if none had to re-run).
-- 3. A job moved back to pending or processing loses its finished_at.
-- 4. What the table accepts is bounded (attempts, max_attempts, priority), and the claim
--    survives every row it can still meet: a job at the attempts limit is failed with a
--    message instead of failing the whole claim, and a waited time of an infinite
--    timestamp is 0 rather than an error.
-- 5. The claim takes 'processing' rows that have no lease (inserted so by hand, or a
--    detached batch whose children have all ended but that nothing completed), as it
--    takes expired ones; never a job whose children are still running.
-- 6. The batch triggers cost nothing to statements that change no child's count (claims,
--    heartbeats, plain inserts): see jobs_flag_children_changed. 0003's cancellation
--    trigger becomes a row trigger with a WHEN clause for the same reason.

-- Bounds -------------------------------------------------------------------------------
-- Added NOT VALID, existing rows brought inside, then validated (one scan each).
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_attempts_range;
ALTER TABLE jobs ADD CONSTRAINT jobs_attempts_range
    CHECK (attempts BETWEEN 0 AND 10000) NOT VALID;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_max_attempts_range;
ALTER TABLE jobs ADD CONSTRAINT jobs_max_attempts_range
    CHECK (max_attempts BETWEEN 1 AND 1000) NOT VALID;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_priority_range;
ALTER TABLE jobs ADD CONSTRAINT jobs_priority_range
    CHECK (priority BETWEEN -1000000 AND 1000000) NOT VALID;

UPDATE jobs
   SET attempts = least(attempts, 10000),
       max_attempts = least(max_attempts, 1000),
       priority = greatest(least(priority, 1000000), -1000000)
 WHERE attempts > 10000 OR max_attempts > 1000 OR priority NOT BETWEEN -1000000 AND 1000000;

ALTER TABLE jobs VALIDATE CONSTRAINT jobs_attempts_range;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_max_attempts_range;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_priority_range;

COMMENT ON COLUMN jobs.attempts IS
    'claims so far; at 10000 the claim fails the job instead of running it (set it to 0 to retry)';

-- finished_at --------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION jobs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.status IN ('pending', 'processing') THEN
        NEW.finished_at := NULL;  -- a retried job has not ended (yet)
    ELSIF NEW.finished_at IS NULL THEN
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END $$;

-- Counters -----------------------------------------------------------------------------
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS children_total integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS children_ended integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN jobs.children_total IS 'child jobs (parent_id = this job), kept by trigger';
COMMENT ON COLUMN jobs.children_ended IS
    'child jobs in completed, failed or cancelled, kept by trigger; a batch ends when it reaches children_total';

-- A batch's result, built once when it ends: one pass over its children (jobs_parent_idx).
-- Counts are taken from a child's result only where they are JSON numbers, so that no odd
-- result can make the batch's end (and so the child's) fail.
CREATE OR REPLACE FUNCTION sitemap_worker_batch_result(p_batch bigint) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
               'domain_count', count(*),
               'completed', count(*) FILTER (WHERE c.status = 'completed'),
               'failed', count(*) FILTER (WHERE c.status = 'failed'),
               'cancelled', count(*) FILTER (WHERE c.status = 'cancelled'),
               'sitemap_count', coalesce(sum(CASE WHEN jsonb_typeof(c.result -> 'sitemap_count') = 'number'
                                                  THEN (c.result ->> 'sitemap_count')::numeric END), 0),
               'url_count', coalesce(sum(CASE WHEN jsonb_typeof(c.result -> 'url_count') = 'number'
                                              THEN (c.result ->> 'url_count')::numeric END), 0),
               'error_count', coalesce(sum(CASE WHEN jsonb_typeof(c.result -> 'error_count') = 'number'
                                                THEN (c.result ->> 'error_count')::numeric END), 0),
               'domains', coalesce(jsonb_agg(jsonb_build_object(
                   'domain', c.payload -> 'domain', 'job_id', c.id, 'status', c.status,
                   'url_count', c.result -> 'url_count',
                   'sitemap_count', c.result -> 'sitemap_count',
                   'error', c.error) ORDER BY c.id), '[]'::jsonb))
      FROM jobs c
     WHERE c.parent_id = p_batch
$$;

-- Completes a batch whose children have all ended, unless a live worker holds it (it is
-- still fanning out; it completes the batch itself, see sitemap_worker_detach). Called
-- once the counters are written, under the batch's row lock: this statement's snapshot
-- sees every child that ended.
CREATE OR REPLACE FUNCTION sitemap_worker_finish_batch(p_batch bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    done bigint;
BEGIN
    UPDATE jobs
       SET status = 'completed', progress = 1, error = NULL, owner = NULL,
           lease_expires_at = NULL, result = sitemap_worker_batch_result(p_batch)
     WHERE id = p_batch AND status = 'processing' AND job_type = 'sitemap_batch'
       AND children_total > 0 AND children_ended >= children_total
       AND (owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at < statement_timestamp())
    RETURNING id INTO done;
    RETURN done;
END $$;

-- Applies per-parent deltas: parents locked in id order (two statements ending children
-- of the same batches never deadlock on them), counters moved by increments, progress
-- kept for batches not ended, a completed batch re-opened when one of its children went
-- back, and a batch completed when its last child has ended.
CREATE OR REPLACE FUNCTION sitemap_worker_count_children(p_ids bigint[], p_total bigint[],
                                                         p_ended bigint[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    b record;
BEGIN
    -- After this lock the next statement's snapshot holds each parent's latest version
    -- (and the increments below would re-read it anyway: an UPDATE that waited does).
    PERFORM 1 FROM jobs WHERE id = ANY(p_ids) ORDER BY id FOR NO KEY UPDATE;
    FOR b IN
        UPDATE jobs j
           SET children_total = j.children_total + d.total,
               children_ended = j.children_ended + d.ended,
               status = CASE WHEN d.reopen THEN 'processing' ELSE j.status END,
               owner = CASE WHEN d.reopen THEN NULL ELSE j.owner END,
               lease_expires_at = CASE WHEN d.reopen THEN NULL ELSE j.lease_expires_at END,
               progress = CASE WHEN (j.status IN ('pending', 'processing') OR d.reopen)
                                    AND j.job_type = 'sitemap_batch'
                                    AND j.children_total + d.total > 0
                               THEN greatest(least((j.children_ended + d.ended)::real
                                                   / (j.children_total + d.total), 1), 0)
                               ELSE j.progress END
          FROM (SELECT u.id, u.total, u.ended,
                       -- re-open: a completed batch one of whose children went back
                       (p.status = 'completed' AND p.job_type = 'sitemap_batch' AND u.ended < 0
                        AND p.children_ended + u.ended < p.children_total + u.total) AS reopen
                  FROM unnest(p_ids, p_total, p_ended) AS u (id, total, ended)
                  JOIN jobs p USING (id)) d
         WHERE j.id = d.id
        RETURNING j.id, j.status, j.children_total, j.children_ended
    LOOP
        IF b.status = 'processing' AND b.children_total > 0
           AND b.children_ended >= b.children_total THEN
            PERFORM sitemap_worker_finish_batch(b.id);
        END IF;
    END LOOP;
END $$;

-- Which statements count. A trigger function called for every statement on jobs (as
-- 0003's was) costs every claim, heartbeat and insert a plpgsql call and a query, about a
-- fifth of the insert rate. So a BEFORE ROW trigger, whose WHEN clause PostgreSQL
-- evaluates in C for each row, raises a transaction-local flag at the first row of a
-- statement that changes a child's count (inserted, deleted, or its status crossing
-- between running and ended); the statement-level triggers that do the counting fire
-- only when the flag is up, and lower it. A statement run from inside another's trigger
-- raises and lowers it on its own; the outer statement's trigger was queued before
-- that, so neither misses its rows.
CREATE OR REPLACE FUNCTION jobs_flag_children_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('sitemap_worker.children_changed', 'on', true);
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;

-- The counting: a statement's rows become per-parent deltas.
CREATE OR REPLACE FUNCTION jobs_count_batch_children_ins() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[]; totals bigint[]; ended bigint[];
BEGIN
    PERFORM set_config('sitemap_worker.children_changed', 'off', true);
    SELECT array_agg(parent_id ORDER BY parent_id), array_agg(t ORDER BY parent_id),
           array_agg(e ORDER BY parent_id)
      INTO ids, totals, ended
      FROM (SELECT parent_id, count(*) AS t,
                   count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS e
              FROM new_rows WHERE parent_id IS NOT NULL GROUP BY parent_id) d;
    IF ids IS NOT NULL THEN
        PERFORM sitemap_worker_count_children(ids, totals, ended);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION jobs_count_batch_children_del() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[]; totals bigint[]; ended bigint[];
BEGIN
    PERFORM set_config('sitemap_worker.children_changed', 'off', true);
    SELECT array_agg(parent_id ORDER BY parent_id), array_agg(-t ORDER BY parent_id),
           array_agg(-e ORDER BY parent_id)
      INTO ids, totals, ended
      FROM (SELECT parent_id, count(*) AS t,
                   count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS e
              FROM old_rows WHERE parent_id IS NOT NULL GROUP BY parent_id) d;
    IF ids IS NOT NULL THEN
        PERFORM sitemap_worker_count_children(ids, totals, ended);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION jobs_count_batch_children_upd() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[]; totals bigint[]; ended bigint[];
BEGIN
    PERFORM set_config('sitemap_worker.children_changed', 'off', true);
    SELECT array_agg(parent_id ORDER BY parent_id), array_agg(t ORDER BY parent_id),
           array_agg(e ORDER BY parent_id)
      INTO ids, totals, ended
      FROM (SELECT parent_id, sum(t) AS t, sum(e) AS e
              FROM (SELECT parent_id, 1 AS t,
                           (status IN ('completed', 'failed', 'cancelled'))::int AS e
                      FROM new_rows WHERE parent_id IS NOT NULL
                    UNION ALL
                    SELECT parent_id, -1,
                           -(status IN ('completed', 'failed', 'cancelled'))::int
                      FROM old_rows WHERE parent_id IS NOT NULL) r
             GROUP BY parent_id
            HAVING sum(t) <> 0 OR sum(e) <> 0) d;
    IF ids IS NOT NULL THEN
        PERFORM sitemap_worker_count_children(ids, totals, ended);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_finish_batches ON jobs;
DROP FUNCTION IF EXISTS jobs_finish_batches();

DROP TRIGGER IF EXISTS jobs_flag_children_ins ON jobs;
CREATE TRIGGER jobs_flag_children_ins BEFORE INSERT ON jobs FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL
          AND current_setting('sitemap_worker.children_changed', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_flag_children_changed();
DROP TRIGGER IF EXISTS jobs_flag_children_upd ON jobs;
CREATE TRIGGER jobs_flag_children_upd BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN ((OLD.parent_id IS NOT NULL OR NEW.parent_id IS NOT NULL)
          AND (OLD.parent_id IS DISTINCT FROM NEW.parent_id
               OR (OLD.status IN ('completed', 'failed', 'cancelled'))
                  <> (NEW.status IN ('completed', 'failed', 'cancelled')))
          AND current_setting('sitemap_worker.children_changed', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_flag_children_changed();
DROP TRIGGER IF EXISTS jobs_flag_children_del ON jobs;
CREATE TRIGGER jobs_flag_children_del BEFORE DELETE ON jobs FOR EACH ROW
    WHEN (OLD.parent_id IS NOT NULL
          AND current_setting('sitemap_worker.children_changed', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_flag_children_changed();

DROP TRIGGER IF EXISTS jobs_count_batch_children_ins ON jobs;
CREATE TRIGGER jobs_count_batch_children_ins AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.children_changed', true) = 'on')
    EXECUTE FUNCTION jobs_count_batch_children_ins();
DROP TRIGGER IF EXISTS jobs_count_batch_children_upd ON jobs;
CREATE TRIGGER jobs_count_batch_children_upd AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.children_changed', true) = 'on')
    EXECUTE FUNCTION jobs_count_batch_children_upd();
DROP TRIGGER IF EXISTS jobs_count_batch_children_del ON jobs;
CREATE TRIGGER jobs_count_batch_children_del AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.children_changed', true) = 'on')
    EXECUTE FUNCTION jobs_count_batch_children_del();

-- A batch set back to pending or processing from an end state by a statement of its own
-- (not by the re-opening above: that is one child's retry) re-runs its failed and
-- cancelled children. A row trigger whose WHEN clause picks out such a batch: other
-- statements never call it.
CREATE OR REPLACE FUNCTION jobs_rerun_batch_children() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;
    END IF;
    UPDATE jobs
       SET status = 'pending', attempts = 0, error = NULL, result = NULL, progress = 0,
           run_at = now(), owner = NULL, lease_expires_at = NULL
     WHERE parent_id = NEW.id AND status IN ('failed', 'cancelled');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_rerun_batch_children ON jobs;
CREATE TRIGGER jobs_rerun_batch_children AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.job_type = 'sitemap_batch' AND NEW.status IN ('pending', 'processing')
          AND OLD.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION jobs_rerun_batch_children();

-- Cancelling a batch cancels what its children have not finished (as in 0003), now from a
-- row trigger whose WHEN clause picks out such a batch: other statements never call it.
CREATE OR REPLACE FUNCTION jobs_cancel_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET status = 'cancelled'
     WHERE parent_id = NEW.id AND status IN ('pending', 'processing');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_cancel_children ON jobs;
CREATE TRIGGER jobs_cancel_children AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.job_type = 'sitemap_batch' AND NEW.status = 'cancelled'
          AND OLD.status IS DISTINCT FROM 'cancelled')
    EXECUTE FUNCTION jobs_cancel_children();

-- The worker lets go of a batch it fanned out; if every child has ended meanwhile (or
-- none had to run), it completes the batch instead, since no trigger will.
CREATE OR REPLACE FUNCTION sitemap_worker_detach(p_id bigint, p_owner text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    detached bigint;
BEGIN
    UPDATE jobs SET owner = NULL, lease_expires_at = NULL
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO detached;
    IF detached IS NOT NULL THEN
        PERFORM sitemap_worker_finish_batch(detached);  -- a new snapshot, under the lock
    END IF;
    RETURN detached;
END $$;

-- Counters for the rows already there, and the batches they show to be stuck.
UPDATE jobs p
   SET children_total = c.total, children_ended = c.ended
  FROM (SELECT parent_id, count(*) AS total,
               count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) AS ended
          FROM jobs WHERE parent_id IS NOT NULL GROUP BY parent_id) c
 WHERE p.id = c.parent_id
   AND (p.children_total, p.children_ended) IS DISTINCT FROM (c.total, c.ended);
SELECT sitemap_worker_finish_batch(id) FROM jobs
 WHERE status = 'processing' AND job_type = 'sitemap_batch'
   AND children_total > 0 AND children_ended >= children_total;

-- The claim --------------------------------------------------------------------------
-- Same signature and answer as 0006. A processing job is taken over when its lease
-- expired or it has none, unless it waits on children of its own that have not all
-- ended (a detached batch); one without attempts left is failed, unless it has
-- children (re-running a batch that has them only completes it).
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
    UPDATE jobs
       SET status = 'failed', owner = NULL, lease_expires_at = NULL,
           error = CASE WHEN lease_expires_at IS NULL
                        THEN format('processing with no lease and no attempts left (%s of %s)',
                                    attempts, max_attempts)
                        ELSE format('worker lost while running (lease expired) on attempt %s of %s',
                                    attempts, max_attempts) END
     WHERE id = ANY(ARRAY(SELECT x.id FROM jobs x
                           WHERE x.status = 'processing'
                             AND (x.lease_expires_at < ts OR x.lease_expires_at IS NULL)
                             AND x.attempts >= x.max_attempts AND x.children_total = 0
                             AND (x.owner IS DISTINCT FROM p_owner OR x.id <> ALL(p_running))
                           LIMIT 100
                             FOR UPDATE SKIP LOCKED));
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
