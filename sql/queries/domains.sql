-- Domains watched over time (issue 19; tables in sql/schema.sql, migrations 0014 and 0016):
-- what a sitemap_scan reads and writes about its domain, the recurring-scan schedule, and
-- the `sitemap-worker domains` command.

-- name: link_scan_domain :one
-- At the start of a scan: its domain row (created on first sight) and the link the end
-- trigger reads; the domain remembers the payload (what a recurring scan enqueues) and
-- this scan as its active one. Returns the domain and its last completed scan, if that
-- job still exists (pruned: nothing to compare against).
-- $1 job, $2 normalised domain, $3 payload (json text).
WITH job AS (
    SELECT id, tenant_id FROM jobs WHERE id = $1
), d AS (
    INSERT INTO domains AS d (tenant_id, domain, scan_payload, active_job_id)
    SELECT job.tenant_id, $2, $3::jsonb, $1 FROM job
    ON CONFLICT (tenant_id, domain) DO UPDATE
       SET scan_payload = EXCLUDED.scan_payload, active_job_id = EXCLUDED.active_job_id,
           updated_at = now()
    RETURNING d.id, d.last_completed_job_id
), link AS (
    INSERT INTO domain_scan_jobs (job_id, domain_id)
    SELECT $1, d.id FROM d
    ON CONFLICT (job_id) DO UPDATE SET domain_id = EXCLUDED.domain_id
)
SELECT d.id AS domain_id,
       (SELECT j.id FROM jobs j
         WHERE j.id = d.last_completed_job_id AND j.id <> $1
           AND j.status = 'completed') AS previous_job_id
  FROM d;

-- name: previous_files :many
-- The files of the domain's previous completed scan that a re-scan may carry over: read
-- whole and well, every URL stored under the file itself, with a body hash. $1 job.
SELECT id, job_id, url, kind, url_count, stored_urls, etag, last_modified, content_hash,
       children, urls_job_id, urls_file_id, content_type, bytes_uncompressed
  FROM sitemap_files
 WHERE job_id = $1 AND status = 'ok' AND NOT truncated AND content_hash IS NOT NULL
   AND kind IS NOT NULL AND stored_urls = url_count;

-- name: carry_sitemap_file :val
-- An unchanged file (a 304, or the same body hash): its row points at the URL rows of the
-- scan that read them, instead of storing them again. A re-run of the job that had stored
-- rows under this file drops them. Returns the file's id.
-- $1 job, $2 url, $3 parent id, $4 parent url, $5 depth, $6 source, $7 final url,
-- $8 http status, $9 bytes, $10 etag, $11 last modified, $12 fetch ms, $13 previous file id.
WITH f AS (
    INSERT INTO sitemap_files AS s (job_id, url, parent_id, parent_url, depth, source,
                                    final_url, kind, status, error, url_count, truncated,
                                    http_status, bytes, bytes_uncompressed, content_type,
                                    etag, last_modified, fetch_ms, urls_job_id, urls_file_id,
                                    stored_urls, content_hash, children)
    SELECT $1, $2, $3, $4, $5, $6, $7, p.kind, 'ok', NULL, p.url_count, false, $8, $9,
           p.bytes_uncompressed, p.content_type, coalesce($10, p.etag),
           coalesce($11, p.last_modified), $12,
           CASE WHEN p.stored_urls > 0 THEN coalesce(p.urls_job_id, p.job_id) END,
           CASE WHEN p.stored_urls > 0 THEN coalesce(p.urls_file_id, p.id) END,
           p.stored_urls, p.content_hash, p.children
      FROM sitemap_files p WHERE p.id = $13
    ON CONFLICT (job_id, md5(url)) DO UPDATE
       SET final_url = EXCLUDED.final_url, kind = EXCLUDED.kind, status = 'ok', error = NULL,
           url_count = EXCLUDED.url_count, truncated = false,
           http_status = EXCLUDED.http_status, bytes = EXCLUDED.bytes,
           bytes_uncompressed = EXCLUDED.bytes_uncompressed,
           content_type = EXCLUDED.content_type, etag = EXCLUDED.etag,
           last_modified = EXCLUDED.last_modified, fetch_ms = EXCLUDED.fetch_ms,
           urls_job_id = EXCLUDED.urls_job_id, urls_file_id = EXCLUDED.urls_file_id,
           stored_urls = EXCLUDED.stored_urls, content_hash = EXCLUDED.content_hash,
           children = EXCLUDED.children, fetched_at = now()
    RETURNING s.id
), dropped AS (
    DELETE FROM sitemap_urls_stored u USING f WHERE u.job_id = $1 AND u.sitemap_file_id = f.id
)
SELECT id FROM f;

-- name: scan_changes :one
-- What this scan changed against the previous completed one (sitemap_worker_scan_changes).
-- $1 job, $2 previous job (null: none), $3 domain, $4 whether the scan read everything.
SELECT added, removed, changed, duplicates
  FROM sitemap_worker_scan_changes($1, $2, $3, $4);

-- name: enqueue_due_scans :many
-- The schedule's tick: each due domain's scan, once. $1 at most this many.
SELECT domain_id, job_id FROM sitemap_worker_enqueue_due_scans($1);

-- name: list_domains :many
-- `sitemap-worker domains`. $1 tenant (null: all), $2 how many.
SELECT d.id, d.tenant_id, d.domain, d.last_status, d.last_scanned_at, d.url_count,
       d.sitemap_count, d.rescan_interval::text AS rescan_interval, d.next_scan_at,
       d.last_job_id, s.added, s.removed, s.changed, s.complete
  FROM domains d
  LEFT JOIN domain_scans s ON s.job_id = d.last_completed_job_id
 WHERE $1::text IS NULL OR d.tenant_id = $1
 ORDER BY d.domain, d.tenant_id NULLS FIRST
 LIMIT $2;

-- name: set_rescan_interval :one
-- `sitemap-worker domains watch`: creates the domain row if it has none yet; the
-- domains_schedule trigger sets next_scan_at. $1 tenant, $2 normalised domain,
-- $3 interval (null: never), $4 the payload a recurring scan enqueues for a new row.
INSERT INTO domains AS d (tenant_id, domain, rescan_interval, scan_payload)
VALUES ($1, $2, $3::interval, $4::jsonb)
ON CONFLICT (tenant_id, domain) DO UPDATE
   SET rescan_interval = EXCLUDED.rescan_interval, updated_at = now()
RETURNING d.id, d.domain, d.rescan_interval::text AS rescan_interval, d.next_scan_at;
