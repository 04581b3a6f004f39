-- sitemap-worker: the CURRENT schema, in one file, organised for reading.
--
-- This file is what applying sql/migrations/0001 .. 0015 in order produces: the same
-- tables, indexes, constraints, functions, triggers and comments. Migrations exist only to
-- move an existing database from one version to the next; read this file to learn the
-- schema. tests/integration/test_schema_drift.py builds one database from the migrations
-- and one from this file and fails when their `pg_dump --schema-only` differ, so a new
-- migration must come with the same change here (and vice versa).
--
-- `sitemap-worker migrate` still applies the migrations, also on an empty database, and
-- never this file: the migrations are what every deployed database went through, and
-- applying them on an empty database costs milliseconds. This file is the checked
-- reference; `psql -1 -f sql/schema.sql` builds an equivalent database for reading or
-- experiments (without the sitemap_worker_migrations table, so `migrate` would not treat
-- it as migrated).
--
-- Job states and every function or trigger that moves a job into each one
-- --------------------------------------------------------------------------
-- Every transition the worker makes is a function below whose WHERE clause is its guard:
-- a job moves from 'processing' only when `owner` is the caller and it is still
-- 'processing', so a worker that lost a job (cancelled, or taken over after its lease
-- expired) changes nothing and learns it from the function's empty answer.
--
--                         sitemap_worker_claim
--     INSERT ──► pending ──────────────────────► processing ──┐ sitemap_worker_renew /
--                 ▲  ▲                           │  ▲  │  │   │ _renew_with_progress
--                 │  └─ sitemap_worker_retry ────┘  │  │  │ ◄─┘ (lease only)
--                 └──── sitemap_worker_release ─────┘  │  │
--                                                      │  └─ sitemap_worker_claim
--              sitemap_worker_complete,                │     (lease expired or none:
--              sitemap_worker_finish_batch ◄───────────┤      taken over)
--              (completed)                             │
--              sitemap_worker_fail, _fail_lost,  ◄─────┘
--              sitemap_worker_claim (failed)
--
--   pending     entered on INSERT (enqueue_many / a plain INSERT; batch children from
--               enqueue_batch_children), by sitemap_worker_retry (a transient error with
--               attempts left, run_at = now() + backoff), by sitemap_worker_release (a
--               worker shutting down hands an unfinished job back, no attempt burned),
--               by jobs_rerun_batch_children (a person sets a batch back: its failed
--               and cancelled children run again), and by sitemap_worker_requeue (a
--               person retries a failed or cancelled job through the HTTP API).
--   processing  entered by sitemap_worker_claim: from pending, or from processing whose
--               lease expired or that has no lease (its worker died) unless it still waits
--               on children. sitemap_worker_detach keeps a fanned-out batch processing
--               with no owner and no lease; sitemap_worker_count_children re-opens a
--               completed batch when one of its children goes back. While a job runs,
--               sitemap_worker_renew (every job of a worker) extends the lease of the
--               owner's jobs only, and so tells it which jobs are still its own; at the end
--               of each phase sitemap_worker_guard_phase (one job, with its progress when
--               due) checks the same without renewing (migration 0012;
--               sitemap_worker_renew_with_progress and its old name sitemap_worker_progress
--               renewed too, and are kept for older workers).
--   completed   entered by sitemap_worker_complete (the handler returned; result holds its
--               summary; the worker calls it through sitemap_worker_end_and_claim, with its
--               next claim in the same statement, or alone) and by sitemap_worker_finish_batch (a batch's last child ended;
--               called by sitemap_worker_count_children and sitemap_worker_detach).
--   failed      entered by sitemap_worker_fail (a permanent error, or the last attempt
--               failed), by sitemap_worker_fail_lost (called by the claim: a lost job with
--               no attempts left), by sitemap_worker_claim itself (a job at the limit of
--               10000 attempts), and on INSERT by enqueue_batch_children (an invalid
--               domain, never run).
--   cancelled   entered only by a person: UPDATE jobs SET status = 'cancelled' WHERE ...,
--               or sitemap_worker_cancel (the HTTP API's cancel, the same with a guard);
--               jobs_cancel_children then cancels a cancelled batch's unfinished children.
--
-- Side effects of every status change (triggers, at the end of this file): jobs_touch
-- keeps updated_at and finished_at; jobs_notify_status notifies 'sitemap_worker_status'
-- (the claim and the completion, the hot path, do both themselves and the two triggers
-- skip them: migration 0015);
-- the jobs_flag_children_* / jobs_count_batch_children_* pair keeps a batch's counters
-- and completes it. An INSERT of a runnable job wakes the workers (jobs_wake_workers).

-- ===================================================================================
-- Tables
-- ===================================================================================

CREATE TABLE jobs (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_type         text        NOT NULL,
    payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Every status, and each function or trigger that enters it: the top of this file.
    status           text        NOT NULL DEFAULT 'pending'
        CONSTRAINT jobs_status_valid
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    progress         real        NOT NULL DEFAULT 0
        CONSTRAINT jobs_progress_range CHECK (progress >= 0 AND progress <= 1),
    result           jsonb,
    error            text,
    attempts         integer     NOT NULL DEFAULT 0 CONSTRAINT jobs_attempts_nonneg CHECK (attempts >= 0),
    max_attempts     integer     NOT NULL DEFAULT 3 CONSTRAINT jobs_max_attempts_pos CHECK (max_attempts >= 1),
    priority         integer     NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Engine columns: which worker holds the job and until when its lease runs.
    owner            text,
    lease_expires_at timestamptz,
    -- Batch fan-out: a child job points at the batch job that created it.
    parent_id        bigint REFERENCES jobs (id) ON DELETE CASCADE,
    -- Batch counters (migration 0008), kept by the counting triggers below.
    children_total   integer     NOT NULL DEFAULT 0,
    children_ended   integer     NOT NULL DEFAULT 0,
    -- The HTTP API (migration 0011): whose job it is (generated from the payload, so a
    -- plain INSERT with a tenant in its payload counts too), what the client keeps with it,
    -- and the Idempotency-Key it was submitted with.
    tenant_id        text GENERATED ALWAYS AS (payload ->> 'tenant_id') STORED,
    meta             jsonb
        CONSTRAINT jobs_meta_object CHECK (meta IS NULL OR jsonb_typeof(meta) = 'object'),
    idempotency_key  text
        CONSTRAINT jobs_idempotency_key_length CHECK (octet_length(idempotency_key) <= 255),
    -- Bounds (migration 0008): the claim survives every row the table accepts.
    CONSTRAINT jobs_attempts_range CHECK (attempts BETWEEN 0 AND 10000),
    CONSTRAINT jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT jobs_priority_range CHECK (priority BETWEEN -1000000 AND 1000000)
);

COMMENT ON TABLE jobs IS 'sitemap-worker job queue: INSERT a row to enqueue; see README.md';
COMMENT ON COLUMN jobs.priority IS 'higher runs first';
COMMENT ON COLUMN jobs.owner IS 'worker id holding the job while processing';
COMMENT ON COLUMN jobs.lease_expires_at IS 'a processing job whose lease expired is re-claimed';
COMMENT ON COLUMN jobs.attempts IS
    'claims so far; at 10000 the claim fails the job instead of running it (set it to 0 to retry)';
COMMENT ON COLUMN jobs.children_total IS 'child jobs (parent_id = this job), kept by trigger';
COMMENT ON COLUMN jobs.children_ended IS
    'child jobs in completed, failed or cancelled, kept by trigger; a batch ends when it reaches children_total';
COMMENT ON COLUMN jobs.tenant_id IS 'payload->>''tenant_id'' (generated): whose job it is';
COMMENT ON COLUMN jobs.meta IS 'a JSON object the submitting client keeps with the job';
COMMENT ON COLUMN jobs.idempotency_key IS
    'the Idempotency-Key a client sent: one job per key and tenant';

-- The claim scans only runnable rows: a small partial index that stays small however
-- many finished jobs the table keeps.
CREATE INDEX jobs_runnable_idx
    ON jobs (priority DESC, run_at, id) WHERE status = 'pending';
-- Expired leases of dead workers are found through this one.
CREATE INDEX jobs_leases_idx
    ON jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX jobs_parent_idx ON jobs (parent_id) WHERE parent_id IS NOT NULL;
-- The HTTP API (migration 0011): one job per Idempotency-Key and tenant, so two racing
-- POSTs make one job; keyset lists, newest first, per tenant, per tenant and status, per
-- status and per scanned domain, that stay fast on millions of rows (partial where they
-- can be: jobs without a tenant cost the tenant indexes nothing).
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (tenant_id, idempotency_key) NULLS NOT DISTINCT
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_tenant_idx ON jobs (tenant_id, id) WHERE tenant_id IS NOT NULL;
CREATE INDEX jobs_tenant_status_idx ON jobs (tenant_id, status, id) WHERE tenant_id IS NOT NULL;
CREATE INDEX jobs_status_idx ON jobs (status, id);
CREATE INDEX jobs_domain_idx ON jobs ((payload ->> 'domain'), id)
    WHERE job_type = 'sitemap_scan';

-- Job rows churn: vacuum the table early and often (queues.md §4.4).
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    fillfactor = 80
);

-- What a scan found (migrations 0002, 0007).
-- One sitemap_files row per sitemap document fetched or attempted, one sitemap_urls row per
-- page URL. Both are keyed so that a retried job (after a crash) re-inserts nothing twice:
-- writers use INSERT ... ON CONFLICT DO NOTHING on the unique indexes below.

CREATE TABLE sitemap_files (
    id                 bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_id             bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    url                text        NOT NULL,  -- as listed (robots.txt, index, well-known path)
    final_url          text,                  -- after redirects
    parent_url         text,                  -- the index that listed it; null at the top
    parent_id          bigint REFERENCES sitemap_files (id) ON DELETE CASCADE,
    depth              integer     NOT NULL DEFAULT 0,
    source             text        NOT NULL DEFAULT 'index'
        CONSTRAINT sitemap_files_source_valid
        CHECK (source IN ('robots', 'well_known', 'index', 'given')),
    -- urlset, index, text, rss, atom, html (an error page), unknown
    kind               text,
    status             text        NOT NULL
        CONSTRAINT sitemap_files_status_valid CHECK (status IN ('ok', 'error')),
    error              text,
    url_count          integer     NOT NULL DEFAULT 0,
    truncated          boolean     NOT NULL DEFAULT false,
    http_status        integer,
    bytes              bigint,                -- as downloaded (compressed if gzip)
    bytes_uncompressed bigint,
    content_type       text,
    etag               text,
    last_modified      text,
    fetch_ms           real,
    fetched_at         timestamptz NOT NULL DEFAULT now()
);

-- md5: URLs can be longer than a btree entry may be.
CREATE UNIQUE INDEX sitemap_files_job_url_key ON sitemap_files (job_id, md5(url));
CREATE INDEX sitemap_files_parent_idx ON sitemap_files (parent_id);

-- No foreign keys on sitemap_urls (migration 0007): a per-row referential check was a
-- third of a big scan's database time. A job's or a file's URL rows go with it by the
-- sitemap_files_drop_urls / sitemap_files_truncate_urls triggers instead.
CREATE TABLE sitemap_urls (
    id              bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_id          bigint      NOT NULL,
    sitemap_file_id bigint      NOT NULL,
    loc             text        NOT NULL,  -- absolute, query string untouched
    lastmod         timestamptz,           -- parsed, when it parses
    lastmod_raw     text,                  -- as published
    changefreq      text,
    priority        real,
    images          jsonb,                 -- extension data: null when absent
    videos          jsonb,
    news            jsonb,
    alternates      jsonb                  -- [{"hreflang": "de", "href": "..."}, ...]
);

-- A page URL is stored once per job, however many sitemaps list it: by its text, or by
-- md5 when it is too long for a btree entry (migration 0007).
CREATE UNIQUE INDEX sitemap_urls_job_loc_uniq
    ON sitemap_urls (job_id, loc) WHERE octet_length(loc) <= 2000;
CREATE UNIQUE INDEX sitemap_urls_job_long_loc_uniq
    ON sitemap_urls (job_id, md5(loc)) WHERE octet_length(loc) > 2000;
CREATE INDEX sitemap_urls_job_file_idx ON sitemap_urls (job_id, sitemap_file_id);

COMMENT ON COLUMN sitemap_urls.job_id IS
    'jobs.id (no foreign key: rows go with their sitemap file by trigger, see migration 0007)';
COMMENT ON COLUMN sitemap_urls.sitemap_file_id IS
    'sitemap_files.id (no foreign key: rows go with their file by trigger, see migration 0007)';

-- HTTP API keys (migration 0011): `sitemap-worker api-key create|list|revoke`. Only a
-- SHA-256 of each key is kept (a key is 256 random bits: nothing to brute-force), with a
-- short visible prefix for listing and revoking. Kinds: 'tenant' (its tenant's jobs),
-- 'admin' (every tenant's), 'read_only' (its tenant's, or every tenant's without one;
-- changes nothing).
CREATE TABLE api_keys (
    id           bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id    text,
    name         text        NOT NULL DEFAULT '',
    kind         text        NOT NULL
        CONSTRAINT api_keys_kind_valid CHECK (kind IN ('tenant', 'admin', 'read_only')),
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_tenant_needed CHECK (kind <> 'tenant' OR tenant_id IS NOT NULL)
);

COMMENT ON TABLE api_keys IS
    'HTTP API keys: sitemap-worker api-key create|list|revoke; only a SHA-256 of each key is kept';
COMMENT ON COLUMN api_keys.prefix IS 'the first characters of the key, shown in listings';
COMMENT ON COLUMN api_keys.key_hash IS 'sha256 of the whole key';

CREATE UNIQUE INDEX api_keys_hash_key ON api_keys (key_hash);
CREATE UNIQUE INDEX api_keys_prefix_key ON api_keys (prefix);

-- Domains watched over time (migration 0014): one row per tenant and normalised domain,
-- its history of scans, and each URL change between scans.
CREATE TABLE domains (
    id                    bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tenant_id             text,                 -- null: jobs with no tenant
    domain                text        NOT NULL  -- normalised: worker.scan.target.domain_key
        CONSTRAINT domains_domain_length CHECK (octet_length(domain) BETWEEN 1 AND 300),
    first_job_id          bigint,               -- job ids: no foreign keys, they outlive pruning
    last_job_id           bigint,
    last_status           text
        CONSTRAINT domains_last_status_valid
        CHECK (last_status IS NULL OR last_status IN ('completed', 'failed', 'cancelled')),
    last_scanned_at       timestamptz,          -- when the last scan ended, however it ended
    last_completed_job_id bigint,
    last_completed_at     timestamptz,
    url_count             bigint      NOT NULL DEFAULT 0,  -- as of the last completed scan
    sitemap_count         integer     NOT NULL DEFAULT 0,
    rescan_interval       interval
        CONSTRAINT domains_rescan_interval_range
        CHECK (rescan_interval IS NULL OR rescan_interval >= interval '1 minute'),
    next_scan_at          timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE domains IS
    'one row per tenant and normalised domain, kept by every sitemap_scan; set rescan_interval to watch it';
COMMENT ON COLUMN domains.domain IS 'normalised: host[:port], no scheme (worker.scan.target.domain_key)';
COMMENT ON COLUMN domains.rescan_interval IS 'null: never re-scanned on its own; at least 1 minute';
COMMENT ON COLUMN domains.next_scan_at IS 'when the worker fleet enqueues its next scan (jittered)';

CREATE UNIQUE INDEX domains_tenant_domain_key ON domains (tenant_id, domain) NULLS NOT DISTINCT;
CREATE INDEX domains_due_idx ON domains (next_scan_at) WHERE rescan_interval IS NOT NULL;

-- One row per ended scan of a domain: its history, with what changed against the
-- previous completed scan.
CREATE TABLE domain_scans (
    job_id          bigint      PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    domain_id       bigint      NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    status          text        NOT NULL
        CONSTRAINT domain_scans_status_valid CHECK (status IN ('completed', 'failed', 'cancelled')),
    finished_at     timestamptz NOT NULL DEFAULT now(),
    previous_job_id bigint,                    -- the completed scan compared against
    url_count       bigint,
    sitemap_count   integer,
    added           integer,
    removed         integer,
    changed         integer,
    complete        boolean     -- read every file whole: removals could be counted
);

CREATE INDEX domain_scans_domain_idx ON domain_scans (domain_id, job_id DESC);

-- Each URL added, removed, or whose lastmod moved, per scan against the previous completed
-- scan of its domain.
CREATE TABLE url_changes (
    id             bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    domain_id      bigint      NOT NULL REFERENCES domains (id) ON DELETE CASCADE,
    job_id         bigint      NOT NULL,       -- the scan that saw it
    change         text        NOT NULL
        CONSTRAINT url_changes_change_valid CHECK (change IN ('added', 'removed', 'changed')),
    loc            text        NOT NULL,
    lastmod_before timestamptz,
    lastmod_after  timestamptz,
    detected_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX url_changes_domain_idx ON url_changes (domain_id, id);
CREATE INDEX url_changes_job_idx ON url_changes (job_id);

-- ===================================================================================
-- Status transitions: every function that changes jobs.status, with its guard
-- ===================================================================================

-- Hot-path statements as plpgsql functions: plpgsql caches their plans per server
-- session, so a pooled client that never prepares anything (PgBouncer/Supavisor in
-- transaction mode) still skips the planner on every claim. Times compare with
-- statement_timestamp(), not now(): now() is when the calling transaction began, which can
-- be before a retry that this statement's snapshot already sees.

-- pending -> processing, and processing -> processing (taken over): the batch claim for a
-- worker's free slots. Runnable pending jobs by priority then run_at, and processing jobs
-- whose lease expired or that have none (their worker died), so no one has to requeue
-- them; never a job whose children are still running (a detached batch), and never one of
-- the jobs this worker says it is still running (`p_running`: its heartbeat renews those).
-- Lost jobs with no attempts left are failed first (sitemap_worker_fail_lost).
CREATE FUNCTION sitemap_worker_claim(p_owner text, p_limit integer,
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

-- processing -> failed: a job whose worker was lost (lease expired, or no lease at all)
-- with no attempts left, and no children to wait for. The claim calls it first, at its
-- own statement time `p_now`; a worker's own running jobs (`p_running`) are left to its
-- heartbeat. At most 100 per claim, so a backlog never makes one claim slow.
CREATE FUNCTION sitemap_worker_fail_lost(p_owner text, p_running bigint[],
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

-- The end of every phase (migration 0012): returns null when the job is no longer this
-- worker's (cancelled or taken over), and the phase rolls back. It renews nothing (the
-- heartbeat does) and writes nothing unless progress is given: the row is share-locked
-- until the phase commits, so a cancel or a take-over waits for the phase instead of
-- slipping in between check and commit. Progress (about once a second per job, by the
-- worker's cadence) updates `progress` alone: no indexed column, so a HOT update.
CREATE FUNCTION sitemap_worker_guard_phase(p_id bigint, p_owner text, p_progress real)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    held bigint;
BEGIN
    IF p_progress IS NULL THEN
        SELECT id INTO held FROM jobs
         WHERE id = p_id AND owner = p_owner AND status = 'processing'
           FOR SHARE;
    ELSE
        UPDATE jobs SET progress = p_progress
         WHERE id = p_id AND owner = p_owner AND status = 'processing'
        RETURNING id INTO held;
    END IF;
    RETURN held;
END $$;

-- The end of every phase before migration 0012: sitemap_worker_renew for one job, which
-- also records the phase's progress (null keeps it). Kept only for workers of an older
-- version still running during an upgrade; this version never calls it.
CREATE FUNCTION sitemap_worker_renew_with_progress(p_id bigint, p_owner text,
                                                   p_progress real,
                                                   p_lease_seconds double precision)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET progress = coalesce(p_progress, progress),
           lease_expires_at = statement_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- The same function under its old name (migration 0001), kept only for workers of an older
-- version still running during an upgrade; this version never calls it.
CREATE FUNCTION sitemap_worker_progress(p_id bigint, p_owner text, p_progress real,
                                        p_lease_seconds double precision)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET progress = coalesce(p_progress, progress),
           lease_expires_at = statement_timestamp() + make_interval(secs => p_lease_seconds)
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- Heartbeat for every job one worker runs; a job missing from the answer was cancelled or
-- lost its lease, and its work must stop.
CREATE FUNCTION sitemap_worker_renew(p_owner text, p_ids bigint[],
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

-- Batched completion: several jobs' final status in one statement. If it fails, the
-- worker writes each job alone, so one bad row never rolls back another job's status.
CREATE FUNCTION sitemap_worker_complete(p_owner text, p_ids bigint[], p_results text[])
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

-- processing -> failed: a permanent error, or the last attempt failed.
CREATE FUNCTION sitemap_worker_fail(p_id bigint, p_owner text, p_error text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET status = 'failed', error = p_error, owner = NULL, lease_expires_at = NULL
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- processing -> pending: a transient error with attempts left, runnable again after a
-- backoff.
CREATE FUNCTION sitemap_worker_retry(p_id bigint, p_owner text, p_error text,
                                     p_delay_seconds double precision)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET status = 'pending', error = p_error, owner = NULL, lease_expires_at = NULL,
           run_at = now() + make_interval(secs => p_delay_seconds)
     WHERE id = p_id AND owner = p_owner AND status = 'processing'
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- processing -> pending: a worker shutting down hands its unfinished jobs back without
-- burning an attempt.
CREATE FUNCTION sitemap_worker_release(p_owner text, p_ids bigint[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    UPDATE jobs
       SET status = 'pending', owner = NULL, lease_expires_at = NULL,
           attempts = greatest(attempts - 1, 0), run_at = now(),
           error = 'released by a worker shutting down'
     WHERE id = ANY(p_ids) AND owner = p_owner AND status = 'processing'
    RETURNING id;
END $$;

-- Completes a batch whose children have all ended, unless a live worker holds it (it is
-- still fanning out; it completes the batch itself, see sitemap_worker_detach). Called
-- once the counters are written, under the batch's row lock: this statement's snapshot
-- sees every child that ended.
CREATE FUNCTION sitemap_worker_finish_batch(p_batch bigint) RETURNS bigint
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

-- The worker lets go of a batch it fanned out; if every child has ended meanwhile (or
-- none had to run), it completes the batch instead, since no trigger will.
CREATE FUNCTION sitemap_worker_detach(p_id bigint, p_owner text) RETURNS bigint
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

-- pending or processing -> cancelled, by a person through the HTTP API (the same as
-- `UPDATE jobs SET status = 'cancelled'` from psql, with a guard). A processing job's
-- worker learns it at its next heartbeat or phase end and stops; a cancelled batch
-- cancels its unfinished children (jobs_cancel_children). Returns the id, or null when the
-- job is missing, another tenant's (p_tenant null: any tenant's) or already ended.
CREATE FUNCTION sitemap_worker_cancel(p_id bigint, p_tenant text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs SET status = 'cancelled'
     WHERE id = p_id AND (p_tenant IS NULL OR tenant_id = p_tenant)
       AND status IN ('pending', 'processing')
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- failed or cancelled -> pending, by a person through the HTTP API: the job runs again
-- from the start, attempts reset, error and result cleared (what README's "retry a failed
-- job by hand" does). A batch re-runs its failed and cancelled children
-- (jobs_rerun_batch_children). Returns the id, or null as sitemap_worker_cancel does.
CREATE FUNCTION sitemap_worker_requeue(p_id bigint, p_tenant text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    touched bigint;
BEGIN
    UPDATE jobs
       SET status = 'pending', attempts = 0, error = NULL, result = NULL, progress = 0,
           run_at = now(), owner = NULL, lease_expires_at = NULL
     WHERE id = p_id AND (p_tenant IS NULL OR tenant_id = p_tenant)
       AND status IN ('failed', 'cancelled')
    RETURNING id INTO touched;
    RETURN touched;
END $$;

-- ===================================================================================
-- Batches (migration 0008): counters, and the status changes a batch's children cause
-- ===================================================================================

-- A batch's result, built once when it ends: one pass over its children (jobs_parent_idx).
-- Counts are taken from a child's result only where they are JSON numbers, so that no odd
-- result can make the batch's end (and so the child's) fail.
CREATE FUNCTION sitemap_worker_batch_result(p_batch bigint) RETURNS jsonb
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

-- Applies per-parent deltas: parents locked in id order (two statements ending children
-- of the same batches never deadlock on them), counters moved by increments, progress
-- kept for batches not ended, a completed batch re-opened when one of its children went
-- back, and a batch completed when its last child has ended.
CREATE FUNCTION sitemap_worker_count_children(p_ids bigint[], p_total bigint[],
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
CREATE FUNCTION jobs_flag_children_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('sitemap_worker.children_changed', 'on', true);
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;

-- The counting: a statement's rows become per-parent deltas.
CREATE FUNCTION jobs_count_batch_children_ins() RETURNS trigger
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

CREATE FUNCTION jobs_count_batch_children_del() RETURNS trigger
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

CREATE FUNCTION jobs_count_batch_children_upd() RETURNS trigger
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

-- A batch set back to pending or processing from an end state by a statement of its own
-- (not by the re-opening above: that is one child's retry) re-runs its failed and
-- cancelled children. A row trigger whose WHEN clause picks out such a batch: other
-- statements never call it.
CREATE FUNCTION jobs_rerun_batch_children() RETURNS trigger
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

-- Cancelling a batch cancels what its children have not finished, from a row trigger
-- whose WHEN clause picks out such a batch: other statements never call it.
CREATE FUNCTION jobs_cancel_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE jobs SET status = 'cancelled'
     WHERE parent_id = NEW.id AND status IN ('pending', 'processing');
    RETURN NULL;
END $$;

-- ===================================================================================
-- Other functions: bookkeeping, wake-up, status channel, URL rows, pruning
-- ===================================================================================

-- Bookkeeping a user should not have to write: updated_at always; finished_at set when a
-- job reaches an end state (also when a user cancels from psql), cleared when it goes back.
CREATE FUNCTION jobs_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    IF NEW.status IN ('pending', 'processing') THEN
        NEW.finished_at := NULL;  -- a retried job has not ended (yet)
    ELSIF NEW.finished_at IS NULL THEN
        NEW.finished_at := now();
    END IF;
    RETURN NEW;
END $$;

-- Wake-up. A NOTIFY makes its transaction take a cluster-wide lock through commit
-- (queues.md §4.1), which would cap concurrent inserts at one commit at a time. So the
-- wake-up is throttled to about one NOTIFY per window (5 ms; change it with
-- `SELECT sitemap_worker_set_wakeup_window(10)`), with a constant payload. The throttle
-- state is a sequence holding the last notified time bucket: sequences are not
-- transactional, so an inserter never waits on another's lock and a long transaction
-- cannot hold the throttle closed. The check sits in the trigger's WHEN clause, evaluated
-- in C (float arithmetic, the window a constant) for each inserted row, so plpgsql runs
-- only when a NOTIFY is due; it is a BEFORE trigger so that the first row of a bulk INSERT
-- closes the window for the rest at once. A job whose wake-up was throttled away is caught
-- by the worker's trailing-edge poll one window after the wake-up it did get.
CREATE SEQUENCE job_wakeup_bucket MINVALUE -1 START -1;

CREATE FUNCTION jobs_wake_workers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0]: buckets per second (1000 / window in ms).
    PERFORM setval('job_wakeup_bucket',
                   floor(date_part('epoch', clock_timestamp()) * TG_ARGV[0]::float8)::bigint);
    PERFORM pg_notify('sitemap_worker_wakeup', '');
    RETURN NEW;
END $$;

CREATE FUNCTION sitemap_worker_set_wakeup_window(window_ms double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    per_second double precision := 1000.0 / greatest(window_ms, 0.001);
BEGIN
    DROP TRIGGER IF EXISTS jobs_wake_workers ON jobs;
    EXECUTE format($t$
        CREATE TRIGGER jobs_wake_workers BEFORE INSERT ON jobs
            FOR EACH ROW
            WHEN (NEW.status = 'pending' AND NEW.run_at <= now()
                  AND floor(date_part('epoch', clock_timestamp()) * %1$s::float8)
                      > coalesce(pg_sequence_last_value('job_wakeup_bucket'), -1))
            EXECUTE FUNCTION jobs_wake_workers(%1$L)$t$, per_second);
END $$;

-- Status channel for clients (never the workers' channel): after each UPDATE statement
-- that changed jobs' status, one notification per new status listing the jobs, e.g.
-- {"status": "completed", "ids": [41, 42]} (at most 500 ids per notification, to stay
-- under the 8000-byte payload limit). Statement-level, so a batch of claims or
-- completions costs one trigger call, not one per row.
CREATE FUNCTION jobs_notify_status() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    change record;
BEGIN
    FOR change IN
        SELECT n.status, array_agg(n.id ORDER BY n.id) AS ids
          FROM new_rows n JOIN old_rows o USING (id)
         WHERE n.status IS DISTINCT FROM o.status
         GROUP BY n.status
    LOOP
        FOR chunk IN 0 .. (cardinality(change.ids) - 1) / 500 LOOP
            PERFORM pg_notify('sitemap_worker_status', json_build_object(
                'status', change.status,
                'ids', change.ids[chunk * 500 + 1 : chunk * 500 + 500])::text);
        END LOOP;
    END LOOP;
    RETURN NULL;
END $$;

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

-- SECURITY DEFINER, as the foreign-key cascade ran: a role allowed to delete jobs (or
-- sitemap_files) needs no rights on sitemap_urls for their URL rows to go with them.
CREATE FUNCTION sitemap_worker_drop_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM sitemap_urls u USING gone_files g
     WHERE u.job_id = g.job_id AND u.sitemap_file_id = g.id;
    RETURN NULL;
END $$;

CREATE FUNCTION sitemap_worker_truncate_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE sitemap_urls;
    RETURN NULL;
END $$;

-- Pruning ended jobs and what their scans stored (migration 0005).
--
-- CALL sitemap_worker_prune(interval '30 days');
--
-- Deletes completed, failed and cancelled jobs that ended before now() - p_older_than, with
-- their sitemap_files (ON DELETE CASCADE), sitemap_urls (sitemap_files_drop_urls) and their
-- batch children,
-- p_batch jobs at a time, committing after each batch: locks stay short, a large backlog
-- never becomes one huge transaction, and autovacuum can keep up. It walks the primary key
-- (jobs end roughly in id order), so no extra index on finished_at is paid for by every
-- completion. Call it outside a transaction block (psql autocommit, or cron); a transaction
-- pooler is fine too. A batch's still-running children keep the batch until they end.

CREATE PROCEDURE sitemap_worker_prune(p_older_than interval,
                                      p_batch integer DEFAULT 100,
                                      INOUT p_deleted bigint DEFAULT 0)
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
    last_id bigint := 0;
    ids bigint[];
    n bigint;
BEGIN
    LOOP
        -- The next stretch of the key among jobs created before the cutoff (a job created
        -- after it cannot have ended before it).
        SELECT array_agg(id ORDER BY id) INTO ids
          FROM (SELECT id FROM jobs
                 WHERE id > last_id AND created_at < cutoff
                 ORDER BY id LIMIT p_batch) stretch;
        EXIT WHEN ids IS NULL;
        last_id := ids[cardinality(ids)];
        DELETE FROM jobs j
         WHERE j.id = ANY(ids)
           AND j.status IN ('completed', 'failed', 'cancelled')
           AND j.finished_at < cutoff
           AND NOT EXISTS (SELECT 1 FROM jobs c
                            WHERE c.parent_id = j.id
                              AND c.status IN ('pending', 'processing'));
        GET DIAGNOSTICS n = ROW_COUNT;
        p_deleted := p_deleted + n;
        COMMIT;
    END LOOP;
END $$;

-- ===================================================================================
-- Triggers (on one table, PostgreSQL fires them in name order)
-- ===================================================================================

-- Skipped when the statement set updated_at and a finished_at that matches the status
-- itself, as the claim and the completion do (migration 0015).
CREATE TRIGGER jobs_touch BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at
          OR (NEW.status IN ('pending', 'processing')) = (NEW.finished_at IS NOT NULL))
    EXECUTE FUNCTION jobs_touch();

-- jobs_wake_workers (BEFORE INSERT, throttled NOTIFY) is created by this call.
SELECT sitemap_worker_set_wakeup_window(5);

-- Skipped for the claim's and the completion's statements, which notify themselves
-- (sitemap_worker_notify_status, migration 0015).
CREATE TRIGGER jobs_notify_status AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.status_notified', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_notify_status();

CREATE TRIGGER jobs_flag_children_ins BEFORE INSERT ON jobs FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL
          AND current_setting('sitemap_worker.children_changed', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_flag_children_changed();

CREATE TRIGGER jobs_flag_children_upd BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN ((OLD.parent_id IS NOT NULL OR NEW.parent_id IS NOT NULL)
          AND (OLD.parent_id IS DISTINCT FROM NEW.parent_id
               OR (OLD.status IN ('completed', 'failed', 'cancelled'))
                  <> (NEW.status IN ('completed', 'failed', 'cancelled')))
          AND current_setting('sitemap_worker.children_changed', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_flag_children_changed();

CREATE TRIGGER jobs_flag_children_del BEFORE DELETE ON jobs FOR EACH ROW
    WHEN (OLD.parent_id IS NOT NULL
          AND current_setting('sitemap_worker.children_changed', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION jobs_flag_children_changed();

CREATE TRIGGER jobs_count_batch_children_ins AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.children_changed', true) = 'on')
    EXECUTE FUNCTION jobs_count_batch_children_ins();

CREATE TRIGGER jobs_count_batch_children_upd AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.children_changed', true) = 'on')
    EXECUTE FUNCTION jobs_count_batch_children_upd();

CREATE TRIGGER jobs_count_batch_children_del AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    WHEN (current_setting('sitemap_worker.children_changed', true) = 'on')
    EXECUTE FUNCTION jobs_count_batch_children_del();

CREATE TRIGGER jobs_rerun_batch_children AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.job_type = 'sitemap_batch' AND NEW.status IN ('pending', 'processing')
          AND OLD.status IN ('completed', 'failed', 'cancelled'))
    EXECUTE FUNCTION jobs_rerun_batch_children();

CREATE TRIGGER jobs_cancel_children AFTER UPDATE ON jobs FOR EACH ROW
    WHEN (NEW.job_type = 'sitemap_batch' AND NEW.status = 'cancelled'
          AND OLD.status IS DISTINCT FROM 'cancelled')
    EXECUTE FUNCTION jobs_cancel_children();

CREATE TRIGGER sitemap_files_drop_urls
    AFTER DELETE ON sitemap_files
    REFERENCING OLD TABLE AS gone_files
    FOR EACH STATEMENT EXECUTE FUNCTION sitemap_worker_drop_file_urls();

CREATE TRIGGER sitemap_files_truncate_urls
    AFTER TRUNCATE ON sitemap_files
    FOR EACH STATEMENT EXECUTE FUNCTION sitemap_worker_truncate_file_urls();
