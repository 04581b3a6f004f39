-- The web dashboard (worker/dashboard/). Every read and write carries the caller's tenant in
-- its WHERE clause ($1 null = every tenant), so another tenant's job is a missing row.
-- Nothing here counts a whole big table: counts stop at a cap ($2) and run on the status
-- indexes (jobs_status_idx, jobs_tenant_status_idx, the partial pending/processing ones);
-- above the cap the page shows the planner's estimate (dash_status_estimates) or "cap+".

-- name: dash_status_counts :many
-- Jobs per status, each count stopping at $2 (an index range scan of at most $2 entries:
-- each branch names its status as a constant, so the planner picks that status's index).
-- Pending is split into queued (runnable now) and scheduled (run_at in the future).
SELECT 'queued' AS state, count(*) AS n FROM (
    SELECT 1 FROM jobs WHERE status = 'pending' AND run_at <= now()
       AND ($1::text IS NULL OR tenant_id = $1) LIMIT $2) c
UNION ALL
SELECT 'scheduled', count(*) FROM (
    SELECT 1 FROM jobs WHERE status = 'pending' AND run_at > now()
       AND ($1::text IS NULL OR tenant_id = $1) LIMIT $2) c
UNION ALL
SELECT 'processing', count(*) FROM (
    SELECT 1 FROM jobs WHERE status = 'processing'
       AND ($1::text IS NULL OR tenant_id = $1) LIMIT $2) c
UNION ALL
SELECT 'completed', count(*) FROM (
    SELECT 1 FROM jobs WHERE status = 'completed'
       AND ($1::text IS NULL OR tenant_id = $1) LIMIT $2) c
UNION ALL
SELECT 'failed', count(*) FROM (
    SELECT 1 FROM jobs WHERE status = 'failed'
       AND ($1::text IS NULL OR tenant_id = $1) LIMIT $2) c
UNION ALL
SELECT 'cancelled', count(*) FROM (
    SELECT 1 FROM jobs WHERE status = 'cancelled'
       AND ($1::text IS NULL OR tenant_id = $1) LIMIT $2) c;

-- name: dash_status_estimates :many
-- The planner's statistics: rows per status in the whole table (after ANALYZE), for counts
-- over the cap. Empty before the table was ever analysed.
SELECT v.status, greatest(v.freq * c.reltuples, 0)::bigint AS n
  FROM pg_class c
  JOIN pg_stats st ON st.schemaname = current_schema() AND st.tablename = 'jobs'
                  AND st.attname = 'status'
 CROSS JOIN LATERAL unnest(st.most_common_vals::text::text[], st.most_common_freqs)
       AS v(status, freq)
 WHERE c.oid = 'jobs'::regclass;

-- name: dash_recent_activity :many
-- The newest $2 jobs (a backward walk of the primary key, or of jobs_tenant_idx): per
-- status how many (total true), and per status and minute of the last hour how many ended
-- (total false; minute null for those that did not end in the last hour).
SELECT w.status, w.minute, GROUPING(w.minute) = 1 AS total, count(*) AS n
  FROM (SELECT status,
               CASE WHEN finished_at > now() - interval '1 hour'
                    THEN date_trunc('minute', finished_at) END AS minute
          FROM jobs
         WHERE ($1::text IS NULL OR tenant_id = $1)
         ORDER BY id DESC LIMIT $2) w
 GROUP BY GROUPING SETS ((w.status), (w.status, w.minute));

-- name: dash_recent_failures :many
-- The last $2 failed jobs (jobs_status_idx / jobs_tenant_status_idx, backwards).
SELECT id, job_type, payload->>'domain' AS domain, tenant_id, error, attempts, finished_at
  FROM jobs
 WHERE status = 'failed' AND ($1::text IS NULL OR tenant_id = $1)
 ORDER BY id DESC LIMIT $2;

-- name: dash_workers :many
-- Workers alive: owners holding live leases (jobs_leases_idx), with what each runs (the
-- caller's jobs only; the first $2 ids).
SELECT owner, count(*) AS running,
       (array_agg(id ORDER BY id))[1:$2] AS job_ids,
       (array_agg(job_type ORDER BY id))[1:$2] AS job_types,
       min(started_at) AS since, max(lease_expires_at) AS lease_until
  FROM jobs
 WHERE status = 'processing' AND lease_expires_at > now() AND owner IS NOT NULL
   AND ($1::text IS NULL OR tenant_id = $1)
 GROUP BY owner
 ORDER BY owner;

-- name: dash_jobs_page :many
-- One page of jobs, newest first, by keyset. $1 tenant, $2 status, $3 job type, $4 domain
-- (exact, as submitted), $5 text in the error (case-insensitive; a completed job has none,
-- so only the other statuses are read), $6 ids below this one (null: from the newest),
-- $7 rows. A null filter is no filter.
SELECT id, job_type, status, progress, payload->>'domain' AS domain,
       jsonb_array_length(CASE WHEN jsonb_typeof(payload->'domains') = 'array'
                               THEN payload->'domains' END) AS domains,
       tenant_id, attempts, max_attempts, error, created_at, started_at, finished_at,
       parent_id, children_total, children_ended
  FROM jobs
 WHERE ($1::text IS NULL OR tenant_id = $1)
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR job_type = $3)
   AND ($4::text IS NULL OR (job_type = 'sitemap_scan' AND payload->>'domain' = $4))
   AND ($5::text IS NULL OR (status IN ('pending', 'processing', 'failed', 'cancelled')
                             AND strpos(lower(error), lower($5)) > 0))
   AND ($6::bigint IS NULL OR id < $6)
 ORDER BY id DESC
 LIMIT $7;

-- name: dash_bulk_preview :one
-- What a bulk action would touch: how many jobs match the filter in the statuses the
-- action moves ($7), and the newest id among them, which bounds the action itself (a job
-- submitted after the confirmation page is not touched). Filters as in dash_jobs_page.
SELECT count(*) AS n, max(id) AS upto
  FROM jobs
 WHERE ($1::text IS NULL OR tenant_id = $1)
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR job_type = $3)
   AND ($4::text IS NULL OR (job_type = 'sitemap_scan' AND payload->>'domain' = $4))
   AND ($5::text IS NULL OR (status IN ('pending', 'processing', 'failed', 'cancelled')
                             AND strpos(lower(error), lower($5)) > 0))
   AND id <= $6
   -- status = ANY($7), split so each arm has an index (jobs_status_idx has no 'processing'
   -- entries since migration 0017; jobs_leases_idx holds exactly those).
   AND ((status = ANY($7::text[]) AND status <> 'processing')
        OR (status = 'processing' AND 'processing' = ANY($7::text[])));

-- name: dash_bulk_cancel :val
-- Everything matching the filter that is pending or processing -> cancelled, in one
-- statement (as sitemap_worker_cancel does for one job). $6 the newest id confirmed.
WITH touched AS (
    UPDATE jobs SET status = 'cancelled'
     WHERE ($1::text IS NULL OR tenant_id = $1)
       AND ($2::text IS NULL OR status = $2)
       AND ($3::text IS NULL OR job_type = $3)
       AND ($4::text IS NULL OR (job_type = 'sitemap_scan' AND payload->>'domain' = $4))
       AND ($5::text IS NULL OR (status IN ('pending', 'processing', 'failed', 'cancelled')
                                 AND strpos(lower(error), lower($5)) > 0))
       AND id <= $6
       AND (status = 'pending' OR status = 'processing')  -- one index each (0017)
    RETURNING 1)
SELECT count(*) FROM touched;

-- name: dash_bulk_retry :val
-- Everything matching the filter that failed or was cancelled -> pending, attempts reset,
-- in one statement (the same SET as sitemap_worker_requeue). $6 the newest id confirmed.
WITH touched AS (
    UPDATE jobs
       SET status = 'pending', attempts = 0, error = NULL, result = NULL, progress = 0,
           run_at = now(), owner = NULL, lease_expires_at = NULL
     WHERE ($1::text IS NULL OR tenant_id = $1)
       AND ($2::text IS NULL OR status = $2)
       AND ($3::text IS NULL OR job_type = $3)
       AND ($4::text IS NULL OR (job_type = 'sitemap_scan' AND payload->>'domain' = $4))
       AND ($5::text IS NULL OR (status IN ('pending', 'processing', 'failed', 'cancelled')
                                 AND strpos(lower(error), lower($5)) > 0))
       AND id <= $6
       AND status IN ('failed', 'cancelled')
    RETURNING 1)
SELECT count(*) FROM touched;

-- name: dash_job :one
-- One job, if the caller may see it. $1 job id, $2 tenant (null: all).
SELECT id, job_type, status, progress, payload, payload->>'domain' AS domain, tenant_id,
       meta, result, error, attempts, max_attempts, priority, run_at, created_at,
       started_at, finished_at, updated_at, owner, lease_expires_at, parent_id,
       children_total, children_ended
  FROM jobs
 WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2);

-- name: dash_job_files :many
-- A scan's sitemap files, in the order they were opened (the first $2). $1 job id (the
-- caller checked it with dash_job in the same transaction).
SELECT id, parent_id, url, final_url, depth, source, kind, status, error, url_count,
       truncated, http_status, bytes, fetch_ms
  FROM sitemap_files
 WHERE job_id = $1
 ORDER BY id
 LIMIT $2;

-- name: dash_job_file_totals :one
-- Files listed and done so far, and URLs counted on them, for a running scan. $1 job id.
SELECT count(*) AS listed,
       count(*) FILTER (WHERE error IS NULL OR error NOT LIKE 'not finished:%') AS done,
       coalesce(sum(url_count), 0) AS urls
  FROM sitemap_files
 WHERE job_id = $1;

-- name: dash_job_urls :many
-- A scan's first $2 URLs with which extensions they carry. $1 job id.
SELECT loc, lastmod, lastmod_raw, changefreq, priority,
       images IS NOT NULL AS has_images, videos IS NOT NULL AS has_videos,
       news IS NOT NULL AS has_news, alternates IS NOT NULL AS has_alternates
  FROM sitemap_urls
 WHERE job_id = $1
 ORDER BY id
 LIMIT $2;

-- name: dash_batch_children :many
-- A batch's children (the first $2), each with its domain and status. $1 batch id
-- (checked with dash_job in the same transaction).
SELECT id, status, progress, payload->>'domain' AS domain, error, attempts, finished_at,
       (result->>'url_count')::bigint AS url_count
  FROM jobs
 WHERE parent_id = $1
 ORDER BY id
 LIMIT $2;

-- name: dash_now :val
-- The database's clock, which every timestamp on a page is relative to.
SELECT now();
