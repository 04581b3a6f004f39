-- What the HTTP API reads of a scan's results (worker/api/results.py) and the status rows the
-- event hub sends (worker/api/events.py). Every read carries the caller's tenant in its WHERE
-- clause ($2 null = every tenant), so another tenant's job is a missing row, never a leak.

-- name: api_job_sitemaps :many
-- A job's sitemap files in id order (parents before the files they list). No row at all: the
-- job is missing or not the caller's; one row with a null id: visible, with no files.
-- $1 job id, $2 tenant (null: all).
WITH job AS (
    SELECT id FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)
)
SELECT f.id, f.parent_id, f.url, f.final_url, f.parent_url, f.depth, f.source, f.kind,
       f.status, f.error, f.url_count, f.truncated, f.http_status, f.bytes,
       f.bytes_uncompressed, f.content_type, f.etag, f.last_modified, f.fetch_ms, f.fetched_at
  FROM job LEFT JOIN sitemap_files f ON f.job_id = job.id
 ORDER BY f.id;

-- name: api_job_urls_page :many
-- One keyset page of a job's URL rows, by id. No row: job missing or not the caller's; one row
-- with a null id: visible, nothing after the cursor. Extensions come as JSON text.
-- $1 job id, $2 tenant (null: all), $3 last id seen (0 at the start), $4 rows.
WITH job AS (
    SELECT id FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)
)
SELECT u.id, u.sitemap_file_id, u.loc, u.lastmod, u.lastmod_raw, u.changefreq,
       u.priority::text AS priority, u.images::text AS images, u.videos::text AS videos,
       u.news::text AS news, u.alternates::text AS alternates
  FROM job LEFT JOIN LATERAL (
        SELECT * FROM sitemap_worker_job_urls(job.id, $3, $4)  -- migration 0016
       ) u ON true
 ORDER BY u.id;

-- name: api_job_urls_ndjson :many
-- The same page as api_job_urls_page, each row already one JSON object (PostgreSQL writes the
-- JSON, so the export never parses and re-serialises the extension columns).
-- $1 job id, $2 tenant (null: all), $3 last id seen, $4 rows.
WITH job AS (
    SELECT id FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)
)
SELECT u.id, json_build_object(
           'loc', u.loc, 'lastmod', u.lastmod, 'lastmod_raw', u.lastmod_raw,
           'changefreq', u.changefreq, 'priority', u.priority,
           'sitemap_file_id', u.sitemap_file_id, 'images', u.images, 'videos', u.videos,
           'news', u.news, 'alternates', u.alternates)::text AS line
  FROM job LEFT JOIN LATERAL (
        SELECT * FROM sitemap_worker_job_urls(job.id, $3, $4)  -- migration 0016
       ) u ON true
 ORDER BY u.id;

-- name: api_status_rows :many
-- The current state of jobs whose status changed (one read per hub window, whatever the
-- number of ids). $1 ids.
SELECT id, job_type, status, progress, tenant_id, parent_id,
       attempts, updated_at, finished_at
  FROM jobs
 WHERE id = ANY($1::bigint[])
 ORDER BY id;
