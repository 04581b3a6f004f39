-- The HTTP API's own statements (worker/api/): keys, submitting, reading, listing, cancel
-- and retry. Every read and write of a job carries the caller's tenant in its WHERE clause
-- ($n null = every tenant), so another tenant's job is a missing row, never a leak. Run
-- without prepare (PgBouncer in transaction mode): each statement is planned with its
-- values, so `$n IS NULL OR ...` folds away.

-- name: api_key_insert :one
-- $1 tenant (null for an admin or read-only key without one), $2 name, $3 kind,
-- $4 visible prefix, $5 sha256 of the key.
INSERT INTO api_keys (tenant_id, name, kind, prefix, key_hash)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, tenant_id, name, kind, prefix, created_at;

-- name: api_key_list :many
SELECT id, tenant_id, name, kind, prefix, created_at, revoked_at, last_used_at
  FROM api_keys ORDER BY id;

-- name: api_key_matches :many
-- Keys an `api-key revoke` argument names: its id, or its prefix (or the start of one).
-- $1 id (null: the argument is no number), $2 the argument.
SELECT id, prefix, revoked_at FROM api_keys
 WHERE id = $1::bigint OR starts_with(prefix, $2::text)
 ORDER BY id;

-- name: api_key_revoke :val
-- $1 id. Null when it was revoked already.
UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id;

-- name: api_key_by_hash :one
-- A live key by its hash, for a Bearer request; marks it used (at most once a minute, so
-- a busy client does not write a row version per request). $1 sha256 of the key.
WITH live AS (
    SELECT id, tenant_id, kind, last_used_at FROM api_keys
     WHERE key_hash = $1 AND revoked_at IS NULL
), touched AS (
    UPDATE api_keys k SET last_used_at = now()
      FROM live
     WHERE k.id = live.id
       AND (live.last_used_at IS NULL OR live.last_used_at < now() - interval '1 minute')
)
SELECT id, tenant_id, kind FROM live;

-- name: api_key_by_id :one
-- A live key by id: a session cookie names its key, and a revoked key ends its sessions.
SELECT id, tenant_id, kind FROM api_keys WHERE id = $1 AND revoked_at IS NULL;

-- name: api_keys_exist :val
-- Any key at all (revoked ones too): while there is none, a loopback server is open.
SELECT EXISTS (SELECT 1 FROM api_keys);

-- name: api_insert_job :one
-- One job from the API. The tenant is in the payload (jobs.tenant_id is generated from
-- it). With an Idempotency-Key a second insert with the same key and tenant inserts
-- nothing (the unique index decides, also between racing requests) and returns no row:
-- api_job_by_idempotency_key then finds the first one.
-- $1 job type, $2 payload (json text), $3 priority, $4 meta (json text or null),
-- $5 idempotency key or null.
INSERT INTO jobs (job_type, payload, priority, meta, idempotency_key)
VALUES ($1, $2::jsonb, $3, $4::jsonb, $5)
ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, status;

-- name: api_job_by_idempotency_key :one
-- $1 tenant (null: jobs without one), $2 key.
SELECT id, status FROM jobs
 WHERE (tenant_id = $1 OR ($1::text IS NULL AND tenant_id IS NULL)) AND idempotency_key = $2
   AND idempotency_key IS NOT NULL;

-- name: api_get_job :one
-- One job as the API shows it, with what a running scan has done so far (its sitemap
-- files: all tried, those finished, the URLs they listed). $1 id, $2 tenant (null: all).
SELECT j.id, j.job_type, j.status, j.progress, j.result::text AS result, j.error,
       j.attempts, j.max_attempts, j.priority, j.tenant_id, j.payload::text AS payload,
       j.meta::text AS meta, j.idempotency_key, j.parent_id, j.children_total,
       j.children_ended, j.run_at, j.created_at, j.started_at, j.finished_at, j.updated_at,
       f.files, f.files_done, f.urls
  FROM jobs j
  LEFT JOIN LATERAL (SELECT count(*) AS files, count(fetch_ms) AS files_done,
                            coalesce(sum(url_count), 0) AS urls
                       FROM sitemap_files WHERE job_id = j.id) f ON j.job_type = 'sitemap_scan'
 WHERE j.id = $1 AND ($2::text IS NULL OR j.tenant_id = $2);

-- name: api_batch_children :many
-- A batch's domains: each child job and its outcome, in the order they were given.
-- $1 batch id (already checked to be the caller's).
SELECT id, payload ->> 'domain' AS domain, status, progress, error,
       result ->> 'url_count' AS url_count
  FROM jobs WHERE parent_id = $1 ORDER BY id;

-- name: api_list_jobs :many
-- One keyset page, newest first: `id < cursor`, never OFFSET, never a count. Each filter
-- null = any; every combination walks one index (jobs_tenant_idx, jobs_tenant_status_idx,
-- jobs_status_idx, jobs_domain_idx or the primary key) backwards.
-- $1 tenant, $2 status, $3 job type, $4 domain (a scan's, as submitted), $5 cursor (the
-- last id of the page before), $6 rows.
SELECT id, job_type, status, progress, attempts, max_attempts, priority, tenant_id,
       payload ->> 'user_id' AS user_id, payload ->> 'domain' AS domain, error, parent_id,
       created_at, started_at, finished_at
  FROM jobs
 WHERE ($1::text IS NULL OR tenant_id = $1)
   AND ($2::text IS NULL OR status = $2)
   AND ($3::text IS NULL OR job_type = $3)
   AND ($4::text IS NULL OR (job_type = 'sitemap_scan' AND payload ->> 'domain' = $4))
   AND ($5::bigint IS NULL OR id < $5)
 ORDER BY id DESC
 LIMIT $6;

-- name: api_cancel_job :val
-- pending or processing -> cancelled (guarded, sql/schema.sql). $1 id, $2 tenant.
SELECT sitemap_worker_cancel($1, $2);

-- name: api_retry_job :val
-- failed or cancelled -> pending, attempts reset (guarded, sql/schema.sql). $1 id, $2 tenant.
SELECT sitemap_worker_requeue($1, $2);

-- name: api_job_status :val
-- Why a cancel or retry changed nothing: the job's status, or null (missing or not the
-- caller's). $1 id, $2 tenant.
SELECT status FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2);

-- name: api_health :val
SELECT 1;
