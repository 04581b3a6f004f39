-- Every statement the worker runs, loaded by name (worker/sql.py).
-- `:one` runs with fetchrow, `:many` with fetch, `:val` with fetchval, `:exec` with execute.
-- Each one is sent unprepared (statement_cache_size=0) inside an explicit transaction, so
-- all of them work through PgBouncer/Supavisor in transaction mode.

-- name: claim_jobs :many
-- Batch claim for the free slots: runnable pending jobs by priority then run_at, and
-- processing jobs whose lease expired (their worker died) so no one has to requeue them.
-- An expired job with no attempts left is failed here instead of run again.
-- Times compare with statement_timestamp(), not now(): now() is when this transaction
-- began, which can be before a retry that this statement's snapshot already sees.
-- $1 owner, $2 how many, $3 lease in seconds.
WITH exhausted AS (
    UPDATE jobs
       SET status = 'failed', owner = NULL, lease_expires_at = NULL,
           error = format('worker lost while running (lease expired) on attempt %s of %s',
                          attempts, max_attempts)
     WHERE id IN (SELECT id FROM jobs
                   WHERE status = 'processing' AND lease_expires_at < statement_timestamp()
                     AND attempts >= max_attempts
                   LIMIT 100
                     FOR UPDATE SKIP LOCKED)
), expired AS (
    SELECT id FROM jobs
     WHERE status = 'processing' AND lease_expires_at < statement_timestamp() AND attempts < max_attempts
     ORDER BY lease_expires_at
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), runnable AS (
    SELECT id FROM jobs
     WHERE status = 'pending' AND run_at <= statement_timestamp()
     ORDER BY priority DESC, run_at, id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id FROM expired
    UNION ALL
    SELECT id FROM runnable
    LIMIT $2
)
UPDATE jobs j
   SET status = 'processing',
       owner = $1,
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => $3),
       error = NULL
  FROM picked
 WHERE j.id = picked.id
RETURNING j.id, j.job_type, j.payload::text AS payload, j.attempts, j.max_attempts,
          j.priority, j.parent_id;

-- name: renew_leases :many
-- Heartbeat for every job this worker runs; a job missing from the answer was cancelled
-- or lost its lease, and its work must stop. $1 owner, $2 ids, $3 lease in seconds.
UPDATE jobs
   SET lease_expires_at = now() + make_interval(secs => $3)
 WHERE id = ANY($2::bigint[]) AND owner = $1 AND status = 'processing'
RETURNING id;

-- name: record_progress :val
-- Written in the same transaction as the phase's rows it counts. $1 id, $2 owner,
-- $3 progress (null keeps it), $4 lease in seconds.
UPDATE jobs
   SET progress = coalesce($3::real, progress),
       lease_expires_at = now() + make_interval(secs => $4)
 WHERE id = $1 AND owner = $2 AND status = 'processing'
RETURNING id;

-- name: complete_jobs :many
-- Batched completion: several jobs' final status in one statement. If this statement
-- fails, the engine writes each job on its own so one bad row never rolls back another.
-- $1 owner, $2 ids, $3 results as json text.
UPDATE jobs j
   SET status = 'completed',
       progress = 1,
       result = done.result::jsonb,
       error = NULL,
       owner = NULL,
       lease_expires_at = NULL
  FROM unnest($2::bigint[], $3::text[]) AS done (id, result)
 WHERE j.id = done.id AND j.owner = $1 AND j.status = 'processing'
RETURNING j.id;

-- name: fail_job :val
-- Permanent failure, or the last attempt failed. $1 id, $2 owner, $3 error.
UPDATE jobs
   SET status = 'failed', error = $3, owner = NULL, lease_expires_at = NULL
 WHERE id = $1 AND owner = $2 AND status = 'processing'
RETURNING id;

-- name: retry_job :val
-- Transient failure with attempts left: back to pending after a backoff.
-- $1 id, $2 owner, $3 error, $4 delay in seconds.
UPDATE jobs
   SET status = 'pending', error = $3, owner = NULL, lease_expires_at = NULL,
       run_at = now() + make_interval(secs => $4)
 WHERE id = $1 AND owner = $2 AND status = 'processing'
RETURNING id;

-- name: release_jobs :many
-- Graceful shutdown: unfinished jobs go back to pending without burning an attempt.
-- $1 owner, $2 ids.
UPDATE jobs
   SET status = 'pending', owner = NULL, lease_expires_at = NULL,
       attempts = greatest(attempts - 1, 0), run_at = now(),
       error = 'released by a worker shutting down'
 WHERE id = ANY($2::bigint[]) AND owner = $1 AND status = 'processing'
RETURNING id;

-- name: enqueue_many :many
-- One statement for many jobs: the statement-level trigger sends one wake-up for all.
-- $1 job_type, $2 payloads as json text, $3 priority, $4 max_attempts (null: default 3).
INSERT INTO jobs (job_type, payload, priority, max_attempts)
SELECT $1, p::jsonb, $3, coalesce($4, 3) FROM unnest($2::text[]) WITH ORDINALITY AS u (p, n)
 ORDER BY n
RETURNING id;

-- name: get_job :one
SELECT id, job_type, payload::text AS payload, status, progress, result::text AS result,
       error, attempts, max_attempts, priority, run_at, created_at, started_at,
       finished_at, owner, lease_expires_at, parent_id
  FROM jobs WHERE id = $1;

-- name: recent_jobs :many
-- $1 how many.
SELECT id, job_type, status, progress, attempts, max_attempts, created_at, started_at,
       finished_at, error, payload::text AS payload
  FROM jobs ORDER BY id DESC LIMIT $1;

-- name: count_by_status :many
SELECT status, count(*) AS n FROM jobs GROUP BY status ORDER BY status;

-- name: migrations_lock :exec
-- Transaction-level, so it works through a transaction pooler and can never leak.
SELECT pg_advisory_xact_lock(7355608, 1);

-- name: migrations_table :exec
CREATE TABLE IF NOT EXISTS sitemap_worker_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations :many
SELECT version FROM sitemap_worker_migrations;

-- name: record_migration :exec
INSERT INTO sitemap_worker_migrations (version) VALUES ($1);

-- name: other_clients :val
-- Before stopping the embedded server: is anyone else (a worker, psql) still connected?
SELECT count(*) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();

-- name: job_states :many
-- $1 ids.
SELECT id, job_type, status, progress, attempts, error FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id;
