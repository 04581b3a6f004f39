-- Statements that only the benchmarks run (queue_bench.py, scan_bench.py and
-- queue_vs_peers.py here), loaded by name (statements.py) the way the worker loads
-- sql/queries.sql. The worker never runs any of these.

-- name: server_facts :one
SELECT current_setting('server_version') AS version,
       current_setting('server_version_num')::int AS version_num,
       current_setting('fsync') AS fsync,
       current_setting('synchronous_commit') AS synchronous_commit,
       current_setting('shared_buffers') AS shared_buffers,
       current_setting('max_connections') AS max_connections,
       current_database() AS database;

-- name: counters :one
-- PostgreSQL 18+: WAL fsyncs moved from pg_stat_wal to pg_stat_io. Commits count read-only
-- transactions too; xmax grows by one per transaction that wrote (got a transaction id).
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       (SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal' AND context = 'normal')::bigint
           AS wal_syncs,
       (SELECT wal_bytes FROM pg_stat_wal)::bigint AS wal_bytes;

-- name: counters_pg14 :one
-- PostgreSQL 14 to 17.
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       (SELECT wal_sync FROM pg_stat_wal) AS wal_syncs,
       (SELECT wal_bytes FROM pg_stat_wal)::bigint AS wal_bytes;

-- name: counters_pg13 :one
-- PostgreSQL 13: no pg_stat_wal.
SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
       NULL::bigint AS wal_syncs, NULL::bigint AS wal_bytes;

-- name: other_backends :val
-- Client sessions of this database other than ours, optionally only one application's:
-- a closed session's statistics are flushed once its backend has gone. $1 application or null.
SELECT count(*) FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend'
   AND pid <> pg_backend_pid() AND ($1::text IS NULL OR application_name = $1);

-- name: foreign_jobs :val
-- Jobs that a bench did not make: the bench empties the table, so it refuses to run over them.
SELECT count(*) FROM jobs WHERE job_type <> 'noop';

-- name: reset_jobs :exec
-- CASCADE: tables that reference jobs cannot be kept anyway once jobs is emptied.
TRUNCATE jobs CASCADE;

-- name: analyze_jobs :exec
ANALYZE jobs;

-- name: drain_check :one
-- Every job completed, and claimed exactly once (a second claim would show attempts = 2).
SELECT count(*) AS total,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'completed' AND attempts = 1) AS completed_once
  FROM jobs;

-- name: pickup_times :many
-- $1 ids. started_at is now() of the claiming transaction, in epoch seconds.
SELECT id, extract(epoch FROM started_at)::float8 AS started, status, attempts
  FROM jobs WHERE id = ANY($1::bigint[]);

-- name: wake_trigger_enabled :val
-- 'O' (enabled), 'D' (disabled), 'R'/'A' (replica/always).
SELECT tgenabled::text FROM pg_trigger
 WHERE tgrelid = 'jobs'::regclass AND tgname = 'jobs_wake_workers';

-- name: wake_trigger_disable :exec
ALTER TABLE jobs DISABLE TRIGGER jobs_wake_workers;

-- name: wake_trigger_enable :exec
ALTER TABLE jobs ENABLE TRIGGER jobs_wake_workers;

-- name: per_row_notify_create :exec
-- Reference variant for the insert benchmark: an unthrottled NOTIFY per inserted row, the
-- way procrastinate wakes its workers. Dropped again by per_row_notify_drop.
CREATE OR REPLACE FUNCTION bench_jobs_notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sitemap_worker_wakeup', NEW.id::text);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_jobs_notify_row ON jobs;
CREATE TRIGGER bench_jobs_notify_row AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION bench_jobs_notify_row();

-- name: per_row_notify_drop :exec
DROP TRIGGER IF EXISTS bench_jobs_notify_row ON jobs;
DROP FUNCTION IF EXISTS bench_jobs_notify_row();

-- name: checkpoint :exec
CHECKPOINT;

-- name: pgbench_insert :exec
-- The insert benchmark's pgbench script: one one-row transaction, the way a client enqueues.
INSERT INTO jobs (job_type, payload) VALUES ('noop', '{}');

-- name: scan_stored :val
-- URLs one scan stored. $1 job.
SELECT count(*) FROM sitemap_urls WHERE job_id = $1;

-- name: scan_forget :exec
-- The scan benchmark's job and everything it stored (cascade). $1 job.
DELETE FROM jobs WHERE id = $1;
