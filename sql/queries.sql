-- Every statement the worker runs, loaded by name (worker/sql.py). The tables, and every
-- function these call (each status change is one, with its guard), are in sql/schema.sql.
-- `:one` runs with fetchrow, `:many` with fetch, `:val` with fetchval, `:exec` with execute:
-- tests/unit/test_sql.py fails when a call site uses another method.
-- Each one is sent unprepared (statement_cache_size=0), inside an explicit transaction or,
-- for a phase that is this one statement (claim, heartbeat, final write), as its own
-- implicit transaction; all of them work through PgBouncer/Supavisor in transaction mode.

-- name: end_and_claim :many
-- The worker's batch claim for its free slots, with the completions queued meanwhile, as
-- one statement in its own implicit transaction (sitemap_worker_end_and_claim and
-- sitemap_worker_claim in sql/schema.sql). Rows with
-- `claimed` false: completions written; true: the jobs claimed.
-- $1 owner, $2 ids ending, $3 their results (json text), $4 how many to claim,
-- $5 lease in seconds, $6 ids of the jobs the worker still holds.
SELECT * FROM sitemap_worker_end_and_claim($1, $2::bigint[], $3::text[], $4, $5,
                                           $6::bigint[]);

-- name: renew_leases :many
-- Heartbeat; a job missing from the answer was cancelled or lost its lease.
-- $1 owner, $2 ids, $3 lease in seconds.
SELECT sitemap_worker_renew AS id FROM sitemap_worker_renew($1, $2::bigint[], $3);

-- name: guard_phase :val
-- The end of every phase, in its transaction; null: the job is not ours (cancelled or
-- taken over) and the phase rolls back. Renews no lease (the heartbeat does).
-- $1 id, $2 owner, $3 progress (null: only share-lock the row until the commit).
SELECT sitemap_worker_guard_phase($1, $2, $3::real);

-- name: complete_jobs :many
-- Several jobs' final status in one statement. $1 owner, $2 ids, $3 results (json text).
SELECT sitemap_worker_complete AS id FROM sitemap_worker_complete($1, $2::bigint[], $3::text[]);

-- name: fail_job :val
-- Permanent failure, or the last attempt failed.
-- $1 id, $2 owner, $3 error.
SELECT sitemap_worker_fail($1, $2, $3);

-- name: retry_job :val
-- Transient failure with attempts left: back to pending after a backoff.
-- $1 id, $2 owner, $3 error, $4 delay in seconds.
SELECT sitemap_worker_retry($1, $2, $3, $4);

-- name: release_jobs :many
-- Graceful shutdown: unfinished jobs go back to pending without burning an attempt.
-- $1 owner, $2 ids.
SELECT sitemap_worker_release AS id FROM sitemap_worker_release($1, $2::bigint[]);

-- name: enqueue_many :many
-- One statement for many jobs (a throttled wake-up, however many rows).
-- $1 job_type, $2 payloads as json text, $3 priority, $4 max_attempts (null: default 3),
-- $5 parent job (a batch's children) or null.
INSERT INTO jobs (job_type, payload, priority, max_attempts, parent_id)
SELECT $1, p::jsonb, $3, coalesce($4, 3), $5
  FROM unnest($2::text[]) WITH ORDINALITY AS u (p, n)
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
-- What a waiting client shows, with a scan's sitemap files (finished / all tried so far)
-- and the URLs they listed so far. $1 ids.
SELECT j.id, j.job_type, j.status, j.progress, j.attempts, j.error,
       f.files, f.files_done, f.urls
  FROM jobs j
  LEFT JOIN LATERAL (SELECT count(*) AS files, count(fetch_ms) AS files_done,
                            coalesce(sum(url_count), 0) AS urls
                       FROM sitemap_files WHERE job_id = j.id) f ON true
 WHERE j.id = ANY($1::bigint[])
 ORDER BY j.id;

-- name: upsert_sitemap_file :val
-- The file's row, in the transaction of its first chunk of URLs (they reference it); a
-- retried job finds its old row.
-- It reads 'error' until finish_sitemap_file says how the fetch went, so a scan that
-- stops on the way leaves no row claiming 'ok'. A re-run reads the file from the start,
-- so its URL count starts again from zero.
-- $1 job, $2 url, $3 parent file id, $4 parent url, $5 depth, $6 source.
INSERT INTO sitemap_files (job_id, url, parent_id, parent_url, depth, source, status, error)
VALUES ($1, $2, $3, $4, $5, $6, 'error', 'not finished: the scan stopped before this file was done')
ON CONFLICT (job_id, md5(url)) DO UPDATE
   SET fetched_at = now(), url_count = 0, stored_urls = 0, urls_job_id = NULL,
       urls_file_id = NULL
RETURNING id;

-- name: record_sitemap_files :many
-- Files that stored no URL, each row written whole in one statement: one fetched without
-- a row yet (an index, an error, an empty file), or the well-known paths that answered 404
-- or 410, all of a scan's at once at its end. A re-run finds its old rows and overwrites
-- them. Returns the ids in the order given (an index's id is its children's parent_id).
-- $1 job, then one array per column: $2 url, $3 parent id, $4 parent url, $5 depth,
-- $6 source, $7 final url, $8 kind, $9 status, $10 error, $11 url_count, $12 truncated,
-- $13 http status, $14 bytes, $15 bytes uncompressed, $16 content type, $17 etag,
-- $18 last modified, $19 fetch ms, $20 URL rows stored, $21 body hash, $22 an index's
-- children (each a JSON array as text, or null).
INSERT INTO sitemap_files AS s (job_id, url, parent_id, parent_url, depth, source, final_url,
                                kind, status, error, url_count, truncated, http_status, bytes,
                                bytes_uncompressed, content_type, etag, last_modified, fetch_ms,
                                stored_urls, content_hash, children)
SELECT $1, f.url, f.parent_id, f.parent_url, f.depth, f.source, f.final_url, f.kind, f.status,
       f.error, f.url_count, f.truncated, f.http_status, f.bytes, f.bytes_uncompressed,
       f.content_type, f.etag, f.last_modified, f.fetch_ms, f.stored_urls, f.content_hash,
       CASE WHEN f.children IS NOT NULL
            THEN ARRAY(SELECT jsonb_array_elements_text(f.children::jsonb)) END
  FROM unnest($2::text[], $3::bigint[], $4::text[], $5::integer[], $6::text[], $7::text[],
              $8::text[], $9::text[], $10::text[], $11::integer[], $12::boolean[],
              $13::integer[], $14::bigint[], $15::bigint[], $16::text[], $17::text[],
              $18::text[], $19::real[], $20::integer[], $21::text[], $22::text[])
              WITH ORDINALITY
       AS f (url, parent_id, parent_url, depth, source, final_url, kind, status, error,
             url_count, truncated, http_status, bytes, bytes_uncompressed, content_type, etag,
             last_modified, fetch_ms, stored_urls, content_hash, children, n)
 ORDER BY f.n
ON CONFLICT (job_id, md5(url)) DO UPDATE
   SET final_url = EXCLUDED.final_url, kind = EXCLUDED.kind, status = EXCLUDED.status,
       error = EXCLUDED.error, url_count = EXCLUDED.url_count, truncated = EXCLUDED.truncated,
       http_status = EXCLUDED.http_status, bytes = EXCLUDED.bytes,
       bytes_uncompressed = EXCLUDED.bytes_uncompressed, content_type = EXCLUDED.content_type,
       etag = EXCLUDED.etag, last_modified = EXCLUDED.last_modified,
       fetch_ms = EXCLUDED.fetch_ms, stored_urls = EXCLUDED.stored_urls,
       content_hash = EXCLUDED.content_hash, children = EXCLUDED.children,
       urls_job_id = NULL, urls_file_id = NULL, fetched_at = now()
RETURNING s.id;

-- name: count_file_urls :exec
-- A chunk's URLs, counted on their file row in the chunk's own transaction, so that
-- url_count grows while a big file is read (finish_sitemap_file sets the final figure).
-- $1 file id, $2 URLs in the chunk.
UPDATE sitemap_files SET url_count = url_count + $2 WHERE id = $1;

-- name: finish_sitemap_file :exec
-- $1 id, then what the fetch and the parse found; $15 URL rows this run stored under the
-- file (the rows are counted: a re-run of the job finds an earlier run's rows too),
-- $16 body hash (null: not read whole), $17 an index's children (JSON array text or null).
UPDATE sitemap_files
   SET final_url = $2, kind = $3, status = $4, error = $5, url_count = $6, truncated = $7,
       http_status = $8, bytes = $9, bytes_uncompressed = $10, content_type = $11,
       etag = $12, last_modified = $13, fetch_ms = $14,
       stored_urls = greatest($15::integer,
                              (SELECT count(*) FROM sitemap_urls_stored u
                                WHERE u.job_id = sitemap_files.job_id
                                  AND u.sitemap_file_id = $1)),
       content_hash = $16, children = CASE WHEN $17::text IS NOT NULL
                       THEN ARRAY(SELECT jsonb_array_elements_text($17::jsonb)) END,
       urls_job_id = NULL, urls_file_id = NULL, fetched_at = now()
 WHERE id = $1;

-- name: insert_sitemap_urls :val
-- A chunk of page URLs in one statement; a URL already stored for this job (listed by
-- another sitemap, or stored before a crash) is skipped: DO NOTHING without a target
-- covers both of the job's URL keys (short URLs by text, long ones by md5; migration 0007),
-- and would also skip a clash on the id key, possible only after ids were inserted by hand.
-- Returns how many were new.
-- $1 job, $2 file, then one array per column.
WITH new_rows AS (
    INSERT INTO sitemap_urls_stored (job_id, sitemap_file_id, loc, lastmod, lastmod_raw,
                                     changefreq, priority, images, videos, news, alternates)
    SELECT $1, $2, u.loc, u.lastmod, u.lastmod_raw, u.changefreq, u.priority,
           u.images::jsonb, u.videos::jsonb, u.news::jsonb, u.alternates::jsonb
      FROM unnest($3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::real[],
                  $8::text[], $9::text[], $10::text[], $11::text[])
           AS u (loc, lastmod, lastmod_raw, changefreq, priority, images, videos, news, alternates)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM new_rows;

-- name: stored_url_count :val
-- Page URLs a job has stored itself so far (files it carried over are carried again by a
-- re-run, and counted then). $1 job.
SELECT count(*) FROM sitemap_urls_stored WHERE job_id = $1;

-- name: sitemap_tree :many
-- $1 job.
SELECT id, parent_id, url, kind, status, error, url_count, truncated, http_status, source, depth
  FROM sitemap_files WHERE job_id = $1 ORDER BY id;

-- name: batch_children :val
-- How many children a batch already has: a retried batch inserts none twice. $1 parent.
SELECT count(*) FROM jobs WHERE parent_id = $1;

-- name: detach_job :val
-- The job's own work is done but it ends later (a batch ends with its last child):
-- no owner and no lease, so no worker holds it and the claim does not take it while its
-- children run. If they have all ended already, this completes the batch instead.
-- $1 id, $2 owner.
SELECT sitemap_worker_detach($1, $2);

-- name: enqueue_batch_children :exec
-- A batch's children in one statement, in the order given. An entry with an error is
-- inserted as already failed with it (an invalid domain): it shows in the batch's result
-- and never runs, unless the batch is retried. $1 batch, $2 payloads (json text),
-- $3 errors (null: runnable), $4 priority.
INSERT INTO jobs (job_type, payload, priority, parent_id, status, error, finished_at)
SELECT 'sitemap_scan', u.p::jsonb, $4, $1,
       CASE WHEN u.e IS NULL THEN 'pending' ELSE 'failed' END, u.e,
       CASE WHEN u.e IS NULL THEN NULL ELSE now() END
  FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u (p, e, n)
 ORDER BY u.n;

-- name: batch_result_if_ended :val
-- The batch's result when every child has ended (json text), else null. $1 batch.
SELECT CASE WHEN children_ended >= children_total
            THEN sitemap_worker_batch_result(id)::text END
  FROM jobs WHERE id = $1;

-- name: queue_depth :many
-- Metrics at scrape time; both sets are small and indexed (partial indexes), unlike the
-- ended jobs, whose totals the counters give instead.
SELECT CASE WHEN status = 'pending' AND run_at > now() THEN 'scheduled' ELSE status END AS state,
       count(*) AS n
  FROM jobs
 WHERE status = 'pending' OR status = 'processing'  -- one index each (migration 0017)
 GROUP BY 1;

-- name: ping :many
-- The health check's probe, run by the same fetch as queue_depth (worker/endpoint.py).
SELECT 1;

-- name: prune :val
-- Outside any transaction block: the procedure commits after each batch.
-- $1 older than (interval), $2 jobs per batch.
CALL sitemap_worker_prune($1, $2);
