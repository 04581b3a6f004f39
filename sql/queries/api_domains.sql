-- The HTTP API's domain statements (worker/api/domain_ops.py, issue 19): list, read, watch,
-- changes. A domain is addressed by (tenant, normalised name); the tenant is the caller's
-- own unless an admin names one, and every statement carries it in its WHERE clause, so
-- another tenant's domain is a missing row (404), never a leak.

-- name: api_domain_list :many
-- One keyset page by name, then id (the same name can belong to several tenants: an admin
-- sees them all). $1 the key's tenant (null: every tenant), $2 one tenant only (null: any),
-- $3 watched (true: rescan_interval set, false: not, null: either), $4 name prefix,
-- $5 and $6 the last (domain, id) of the page before (null at the start), $7 rows.
SELECT id, tenant_id, domain, first_job_id, last_job_id, last_status, last_scanned_at,
       last_completed_job_id, last_completed_at, url_count, sitemap_count,
       extract(epoch FROM rescan_interval)::bigint AS rescan_seconds, next_scan_at,
       created_at, updated_at
  FROM domains
 WHERE ($1::text IS NULL OR tenant_id = $1)
   AND ($2::text IS NULL OR tenant_id = $2)
   AND ($3::boolean IS NULL OR (rescan_interval IS NOT NULL) = $3)
   AND ($4::text IS NULL OR starts_with(domain, $4))
   AND ($5::text IS NULL OR (domain, id) > ($5, $6::bigint))
 ORDER BY domain, id
 LIMIT $7;

-- name: api_domain_get :one
-- One domain. $1 its tenant (null: jobs without one; the caller already checked it may see
-- it), $2 the normalised name. Not `IS NOT DISTINCT FROM`, which no index serves: planned
-- with its values, the OR folds to `tenant_id = 'x'` or `tenant_id IS NULL`, and the unique
-- index (tenant_id, domain) finds the row.
SELECT id, tenant_id, domain, first_job_id, last_job_id, last_status, last_scanned_at,
       last_completed_job_id, last_completed_at, url_count, sitemap_count,
       extract(epoch FROM rescan_interval)::bigint AS rescan_seconds, next_scan_at,
       created_at, updated_at
  FROM domains
 WHERE (tenant_id = $1::text OR ($1::text IS NULL AND tenant_id IS NULL)) AND domain = $2;

-- name: api_domain_scans :many
-- A domain's ended scans, newest first (domain_scans_domain_idx). $1 domain id, $2 rows.
SELECT job_id, status, finished_at, previous_job_id, url_count, sitemap_count, added,
       removed, changed, complete
  FROM domain_scans
 WHERE domain_id = $1
 ORDER BY job_id DESC
 LIMIT $2;

-- name: api_domain_set_interval :one
-- Watch a domain (or stop): creates its row for the tenant if it was never scanned. Newly
-- watched: due now (the worker fleet adds its jitter when it schedules the next); already
-- watched: its next scan moves no later than now + the new interval, so repeating the same
-- PUT does not trigger a scan; cleared: no next scan. $1 tenant, $2 normalised name,
-- $3 seconds (null: stop watching).
INSERT INTO domains AS d (tenant_id, domain, rescan_interval, next_scan_at)
VALUES ($1::text, $2::text, $3::bigint * interval '1 second',
        CASE WHEN $3::bigint IS NULL THEN NULL ELSE now() END)
ON CONFLICT (tenant_id, domain) DO UPDATE
   SET rescan_interval = excluded.rescan_interval,
       next_scan_at = CASE
           WHEN excluded.rescan_interval IS NULL THEN NULL
           WHEN d.rescan_interval IS NULL OR d.next_scan_at IS NULL THEN now()
           ELSE least(d.next_scan_at, now() + excluded.rescan_interval)
       END,
       updated_at = now()
RETURNING id;

-- name: api_domain_changes :many
-- A keyset page of a domain's changes, oldest first (url_changes_domain_idx). $1 domain id,
-- $2 only scans after this job id (null: any), $3 only detected after this time (null:
-- any), $4 change kind (null: any), $5 the last id of the page before (0 at the start),
-- $6 rows.
SELECT id, job_id, change, loc, lastmod_before, lastmod_after, detected_at
  FROM url_changes
 WHERE domain_id = $1
   AND ($2::bigint IS NULL OR job_id > $2)
   AND ($3::timestamptz IS NULL OR detected_at > $3)
   AND ($4::text IS NULL OR change = $4)
   AND id > $5
 ORDER BY id
 LIMIT $6;
