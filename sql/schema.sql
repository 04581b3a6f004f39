-- sitemap-worker: the CURRENT schema, in one file, organised for reading.
--
-- This file is what applying sql/migrations/0001 .. 0018 in order produces: the same
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
-- Not 'processing' (migration 0017): the claim then writes no entry here, and processing
-- jobs, a few per worker slot, are read through jobs_leases_idx.
CREATE INDEX jobs_status_idx ON jobs (status, id) WHERE status <> 'processing';
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
    fetched_at         timestamptz NOT NULL DEFAULT now(),
    -- Re-scans (migration 0016): an unchanged file carries its URL rows over from the scan
    -- that read them instead of storing them again.
    urls_job_id        bigint,
    urls_file_id       bigint,
    stored_urls        integer     NOT NULL DEFAULT 0,
    content_hash       text,
    children           text[]
);

COMMENT ON COLUMN sitemap_files.urls_job_id IS
    'carried over: the job whose URL rows this unchanged file shows (null: its own rows)';
COMMENT ON COLUMN sitemap_files.urls_file_id IS
    'carried over: the sitemap_files.id that read the URL rows (it may have been pruned since)';
COMMENT ON COLUMN sitemap_files.stored_urls IS
    'URL rows of this file: url_count less the URLs another file of the job had listed first';
COMMENT ON COLUMN sitemap_files.content_hash IS
    'sha256 of the body as received: a re-scan finds an unchanged file without validators';
COMMENT ON COLUMN sitemap_files.children IS
    'an index''s child sitemaps as listed: a re-scan walks them without fetching the index again';

-- md5: URLs can be longer than a btree entry may be.
CREATE UNIQUE INDEX sitemap_files_job_url_key ON sitemap_files (job_id, md5(url));
CREATE INDEX sitemap_files_parent_idx ON sitemap_files (parent_id);
CREATE INDEX sitemap_files_urls_file_idx ON sitemap_files (urls_file_id)
    WHERE urls_file_id IS NOT NULL;

-- No foreign keys on the URL rows (migration 0007): a per-row referential check was a
-- third of a big scan's database time. A file's URL rows go with the last file row that
-- shows them (sitemap_files_drop_urls / sitemap_files_truncate_urls triggers) instead.
-- Migration 0016 renamed the table sitemap_urls to sitemap_urls_stored: one row per URL and
-- the scan that READ it; the `sitemap_urls` view (at the end of this file) shows each job
-- every URL it saw, read afresh or carried over from an unchanged file of an earlier scan.
CREATE TABLE sitemap_urls_stored (
    -- the NOT NULL constraints keep the names they had in the table's first name
    id              bigint      CONSTRAINT sitemap_urls_id_not_null NOT NULL
                                GENERATED BY DEFAULT AS IDENTITY,
    job_id          bigint      CONSTRAINT sitemap_urls_job_id_not_null NOT NULL,
    sitemap_file_id bigint      CONSTRAINT sitemap_urls_sitemap_file_id_not_null NOT NULL,
    loc             text        CONSTRAINT sitemap_urls_loc_not_null NOT NULL,  -- absolute
    lastmod         timestamptz,           -- parsed, when it parses
    lastmod_raw     text,                  -- as published
    changefreq      text,
    priority        real,
    images          jsonb,                 -- extension data: null when absent
    videos          jsonb,
    news            jsonb,
    alternates      jsonb,                 -- [{"hreflang": "de", "href": "..."}, ...]
    CONSTRAINT sitemap_urls_stored_pkey PRIMARY KEY (id)
);

-- A page URL is stored once per job, however many sitemaps list it: by its text, or by
-- md5 when it is too long for a btree entry (migration 0007).
CREATE UNIQUE INDEX sitemap_urls_job_loc_uniq
    ON sitemap_urls_stored (job_id, loc) WHERE octet_length(loc) <= 2000;
CREATE UNIQUE INDEX sitemap_urls_job_long_loc_uniq
    ON sitemap_urls_stored (job_id, md5(loc)) WHERE octet_length(loc) > 2000;
-- Per file, in id order (migration 0016): the view's join and a job's keyset pages.
CREATE INDEX sitemap_urls_stored_file_idx ON sitemap_urls_stored (job_id, sitemap_file_id, id);

COMMENT ON TABLE sitemap_urls_stored IS
    'URL rows as read by the scan that fetched their file; read them through the sitemap_urls view';
COMMENT ON COLUMN sitemap_urls_stored.job_id IS
    'the job that read the URL (no foreign key: rows go with the last sitemap file pointing at them)';
COMMENT ON COLUMN sitemap_urls_stored.sitemap_file_id IS
    'the sitemap_files.id that read the URL (no foreign key: see sitemap_worker_drop_file_urls)';

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
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- migration 0016: what a recurring scan enqueues, and the scan pending or running now
    scan_payload          jsonb,
    active_job_id         bigint
);

COMMENT ON TABLE domains IS
    'one row per tenant and normalised domain, kept by every sitemap_scan; set rescan_interval to watch it';
COMMENT ON COLUMN domains.domain IS 'normalised: host[:port], no scheme (worker.scan.target.domain_key)';
COMMENT ON COLUMN domains.rescan_interval IS 'null: never re-scanned on its own; at least 1 minute';
COMMENT ON COLUMN domains.next_scan_at IS 'when the worker fleet enqueues its next scan (jittered)';

CREATE UNIQUE INDEX domains_tenant_domain_key ON domains (tenant_id, domain) NULLS NOT DISTINCT;
CREATE INDEX domains_due_idx ON domains (next_scan_at) WHERE rescan_interval IS NOT NULL;
-- The admin's list of every tenant's domains, by name (migration 0018).
CREATE INDEX domains_name_idx ON domains (domain, id);

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

COMMENT ON COLUMN domains.scan_payload IS
    'the payload of its last scan: what a recurring scan enqueues (null: {"domain": domain})';
COMMENT ON COLUMN domains.active_job_id IS
    'its latest scan while pending or running: no recurring scan is enqueued meanwhile';

-- Which domain each sitemap_scan scans (migration 0016): written by the worker when the scan
-- starts, or by sitemap_worker_enqueue_due_scans with the job; read by the trigger that
-- records the scan's end.
CREATE TABLE domain_scan_jobs (
    job_id    bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    domain_id bigint NOT NULL REFERENCES domains (id) ON DELETE CASCADE
);

COMMENT ON TABLE domain_scan_jobs IS
    'which domain each sitemap_scan scans: written when it starts (or is enqueued by the schedule)';

CREATE INDEX domain_scan_jobs_domain_idx ON domain_scan_jobs (domain_id);

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
    claimed_rows jobs[];
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
        RETURNING j AS claimed_row
    )
    SELECT array_agg(c.claimed_row) INTO claimed_rows FROM claimed c;
    PERFORM set_config('sitemap_worker.status_notified', '', true);
    -- Taken-over jobs were processing already: only those that failed here changed status.
    FOR change IN
        SELECT u.status, array_agg(u.id ORDER BY u.id) AS ids
          FROM unnest(claimed_rows) AS u
         WHERE u.id <> ALL(picked[: taken_over]) OR u.status = 'failed'
         GROUP BY u.status
    LOOP
        PERFORM sitemap_worker_notify_status(change.status, change.ids);
    END LOOP;
    RETURN QUERY
    SELECT u.id, u.job_type, u.payload::text, u.attempts, u.max_attempts, u.priority,
           u.parent_id,
           CASE WHEN isfinite(r.runnable)
                THEN greatest(extract(epoch FROM ts - r.runnable)::float8, 0) ELSE 0 END
      FROM unnest(claimed_rows) AS u
     CROSS JOIN LATERAL (SELECT greatest(u.created_at, u.run_at) AS runnable) AS r
     WHERE u.status = 'processing';
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
-- sitemap_files) needs no rights on sitemap_urls_stored for their URL rows to go with them.
-- A file row's URL rows go once no file row points at them any more: the one that read
-- them, or a later scan's that carried them over (migration 0016).
CREATE FUNCTION sitemap_worker_drop_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM sitemap_urls_stored u
     USING (SELECT DISTINCT coalesce(g.urls_job_id, g.job_id) AS job_id,
                            coalesce(g.urls_file_id, g.id) AS file_id
              FROM gone_files g) k
     WHERE u.job_id = k.job_id AND u.sitemap_file_id = k.file_id
       AND NOT EXISTS (SELECT 1 FROM sitemap_files s WHERE s.id = k.file_id)
       AND NOT EXISTS (SELECT 1 FROM sitemap_files s WHERE s.urls_file_id = k.file_id);
    RETURN NULL;
END $$;

CREATE FUNCTION sitemap_worker_truncate_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE sitemap_urls_stored;
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

-- ===================================================================================
-- Domains watched over time (migration 0016): the sitemap_urls view over the stored rows,
-- each scan's end recorded on its domain, recurring scans, and what changed
-- ===================================================================================

CREATE VIEW sitemap_urls AS
SELECT u.id, f.job_id, f.id AS sitemap_file_id, u.loc, u.lastmod, u.lastmod_raw,
       u.changefreq, u.priority, u.images, u.videos, u.news, u.alternates
  FROM sitemap_files f
  JOIN sitemap_urls_stored u
    ON u.job_id = coalesce(f.urls_job_id, f.job_id)
   AND u.sitemap_file_id = coalesce(f.urls_file_id, f.id);

COMMENT ON VIEW sitemap_urls IS
    'every URL each job saw, read afresh or carried over from an earlier scan of an unchanged file';

-- An INSERT into the view (scripts, fixtures written for the old table) stores a row as read.
CREATE FUNCTION sitemap_worker_insert_url_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sitemap_urls_stored (id, job_id, sitemap_file_id, loc, lastmod, lastmod_raw,
                                     changefreq, priority, images, videos, news, alternates)
    VALUES (coalesce(NEW.id, nextval('sitemap_urls_stored_id_seq')), NEW.job_id,
            NEW.sitemap_file_id, NEW.loc, NEW.lastmod, NEW.lastmod_raw, NEW.changefreq,
            NEW.priority, NEW.images, NEW.videos, NEW.news, NEW.alternates)
    RETURNING id INTO NEW.id;
    RETURN NEW;
END $$;

CREATE TRIGGER sitemap_urls_insert INSTEAD OF INSERT ON sitemap_urls
    FOR EACH ROW EXECUTE FUNCTION sitemap_worker_insert_url_row();

-- One keyset page of a job's URLs by id: each file's rows are one index range, read from
-- the cursor on, at most p_limit each, then merged.
CREATE FUNCTION sitemap_worker_job_urls(p_job bigint, p_after bigint, p_limit integer)
RETURNS SETOF sitemap_urls LANGUAGE sql STABLE AS $$
SELECT u.id, f.job_id, f.id, u.loc, u.lastmod, u.lastmod_raw, u.changefreq, u.priority,
       u.images, u.videos, u.news, u.alternates
  FROM sitemap_files f
  CROSS JOIN LATERAL (
        SELECT s.* FROM sitemap_urls_stored s
         WHERE s.job_id = coalesce(f.urls_job_id, f.job_id)
           AND s.sitemap_file_id = coalesce(f.urls_file_id, f.id)
           AND s.id > p_after
         ORDER BY s.id
         LIMIT p_limit) u
 WHERE f.job_id = p_job
 ORDER BY u.id
 LIMIT p_limit
$$;

-- Jitter for a domain's next due time: up to a tenth of its interval, at most ten minutes,
-- so domains set at once spread out instead of falling due in the same second.
CREATE FUNCTION sitemap_worker_rescan_jitter(p_interval interval) RETURNS interval
LANGUAGE sql VOLATILE AS $$
SELECT random() * least(p_interval / 10, interval '10 minutes')
$$;

-- The end of a sitemap_scan (completed, failed or cancelled), in the transaction that ends
-- it: its domain_scans row and the domain's last-scan columns. A scan that never started
-- (cancelled while pending, an invalid domain) has no domain and is skipped.
CREATE FUNCTION sitemap_worker_record_domain_scan() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_domain bigint;
    v_ended  timestamptz := coalesce(NEW.finished_at, statement_timestamp());
    v_done   boolean := NEW.status = 'completed';
BEGIN
    SELECT domain_id INTO v_domain FROM domain_scan_jobs WHERE job_id = NEW.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO domain_scans AS s (job_id, domain_id, status, finished_at, previous_job_id,
                                   url_count, sitemap_count, added, removed, changed, complete)
    VALUES (NEW.id, v_domain, NEW.status, v_ended,
            CASE WHEN v_done THEN (NEW.result ->> 'previous_job_id')::bigint END,
            CASE WHEN v_done THEN (NEW.result ->> 'url_count')::bigint END,
            CASE WHEN v_done THEN (NEW.result ->> 'sitemap_count')::integer END,
            CASE WHEN v_done THEN (NEW.result ->> 'added')::integer END,
            CASE WHEN v_done THEN (NEW.result ->> 'removed')::integer END,
            CASE WHEN v_done THEN (NEW.result ->> 'changed')::integer END,
            CASE WHEN v_done THEN (NEW.result ->> 'complete')::boolean END)
    ON CONFLICT (job_id) DO UPDATE
       SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at,
           previous_job_id = EXCLUDED.previous_job_id, url_count = EXCLUDED.url_count,
           sitemap_count = EXCLUDED.sitemap_count, added = EXCLUDED.added,
           removed = EXCLUDED.removed, changed = EXCLUDED.changed,
           complete = EXCLUDED.complete;
    UPDATE domains d
       SET first_job_id = coalesce(d.first_job_id, NEW.id),
           last_job_id = NEW.id,
           last_status = NEW.status,
           last_scanned_at = v_ended,
           last_completed_job_id = CASE WHEN v_done THEN NEW.id ELSE d.last_completed_job_id END,
           last_completed_at = CASE WHEN v_done THEN v_ended ELSE d.last_completed_at END,
           url_count = CASE WHEN v_done THEN coalesce((NEW.result ->> 'url_count')::bigint, 0)
                            ELSE d.url_count END,
           sitemap_count = CASE WHEN v_done
                                THEN coalesce((NEW.result ->> 'sitemap_count')::integer, 0)
                                ELSE d.sitemap_count END,
           active_job_id = CASE WHEN d.active_job_id = NEW.id THEN NULL ELSE d.active_job_id END,
           next_scan_at = CASE WHEN d.rescan_interval IS NULL THEN NULL
                               ELSE v_ended + d.rescan_interval
                                    + sitemap_worker_rescan_jitter(d.rescan_interval) END,
           updated_at = statement_timestamp()
     WHERE d.id = v_domain;
    RETURN NULL;
END $$;

-- Only a sitemap_scan entering an end status runs the function; the WHEN clause is
-- evaluated in C, so any other job's status change pays almost nothing.
CREATE TRIGGER jobs_record_domain_scan AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.job_type = 'sitemap_scan'
          AND NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION sitemap_worker_record_domain_scan();

-- 3. Recurring scans -------------------------------------------------------------------------

-- rescan_interval set (from SQL, the CLI or the API): next_scan_at follows, jittered, unless
-- the same statement sets next_scan_at itself. Null: never re-scanned on its own.
CREATE FUNCTION sitemap_worker_domain_schedule() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.rescan_interval IS NULL THEN
        NEW.next_scan_at := NULL;
    ELSIF TG_OP = 'INSERT' AND NEW.next_scan_at IS NULL
       OR TG_OP = 'UPDATE' AND OLD.rescan_interval IS DISTINCT FROM NEW.rescan_interval
                           AND OLD.next_scan_at IS NOT DISTINCT FROM NEW.next_scan_at THEN
        NEW.next_scan_at := greatest(statement_timestamp(),
                                     coalesce(NEW.last_scanned_at + NEW.rescan_interval,
                                              statement_timestamp()))
                            + sitemap_worker_rescan_jitter(NEW.rescan_interval);
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER domains_schedule BEFORE INSERT OR UPDATE OF rescan_interval ON domains
    FOR EACH ROW EXECUTE FUNCTION sitemap_worker_domain_schedule();

-- Enqueue a sitemap_scan for each due domain, at most p_limit, skipping rows another worker
-- holds (SKIP LOCKED: each due time is taken once, however many workers call this at the
-- same moment; the one that takes it moves next_scan_at on before it commits). A domain
-- whose scan is still pending or running is not scanned again: its due time moves on by
-- its interval. Returns the jobs enqueued.
CREATE FUNCTION sitemap_worker_enqueue_due_scans(p_limit integer DEFAULT 100)
RETURNS TABLE (domain_id bigint, job_id bigint) LANGUAGE plpgsql AS $$
DECLARE
    d record;
    v_job bigint;
    v_now timestamptz := now();  -- the jobs' created_at: never before the due time it meets
BEGIN
    FOR d IN
        SELECT * FROM domains
         WHERE rescan_interval IS NOT NULL AND next_scan_at <= v_now
         ORDER BY next_scan_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        IF EXISTS (SELECT 1 FROM jobs j
                    WHERE j.id = d.active_job_id AND j.status IN ('pending', 'processing'))
           OR EXISTS (SELECT 1 FROM jobs j
                       WHERE j.job_type = 'sitemap_scan' AND j.status = 'pending'
                         AND j.tenant_id IS NOT DISTINCT FROM d.tenant_id
                         AND (j.payload ->> 'domain') IN (d.domain, 'http://' || d.domain,
                                                          'https://' || d.domain,
                                                          d.scan_payload ->> 'domain'))
        THEN
            UPDATE domains
               SET next_scan_at = v_now + d.rescan_interval
                                  + sitemap_worker_rescan_jitter(d.rescan_interval)
             WHERE id = d.id;
            CONTINUE;
        END IF;
        INSERT INTO jobs (job_type, payload)
        VALUES ('sitemap_scan',
                coalesce(d.scan_payload, jsonb_build_object('domain', d.domain))
                || CASE WHEN d.tenant_id IS NULL THEN '{}'::jsonb
                        ELSE jsonb_build_object('tenant_id', d.tenant_id) END)
        RETURNING id INTO v_job;
        INSERT INTO domain_scan_jobs (job_id, domain_id) VALUES (v_job, d.id);
        UPDATE domains
           SET active_job_id = v_job,
               next_scan_at = v_now + d.rescan_interval
                              + sitemap_worker_rescan_jitter(d.rescan_interval),
               updated_at = v_now
         WHERE id = d.id;
        domain_id := d.id;
        job_id := v_job;
        RETURN NEXT;
    END LOOP;
END $$;

-- 4. Changes ----------------------------------------------------------------------------------

-- What scan p_job changed against p_previous (the domain's previous completed scan). The URL
-- rows of files both scans share (carried over) are the same rows: they are not read, only
-- probed by URL through the (job_id, loc) index for a URL that moved between files. A URL of
-- the previous scan counts as removed only when this scan was complete (p_complete) or read
-- whole the file that listed it: URLs of files this scan could not read are never "removed".
-- First, a URL stored afresh that a carried-over file of the same job already shows is
-- dropped (a URL is once per job). Writes url_changes (a re-run replaces its rows); returns
-- the counts (null without a previous scan) and how many duplicate rows were dropped. Every
-- read follows the files read afresh, never the size of the site.
CREATE FUNCTION sitemap_worker_scan_changes(p_job bigint, p_previous bigint,
                                            p_domain bigint, p_complete boolean)
RETURNS TABLE (added bigint, removed bigint, changed bigint, duplicates bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_carried bigint[];
    v_carried_jobs bigint[];
    v_new bigint[];
    v_old bigint[];
    v_shared bigint[];
    v_shared_jobs bigint[];
BEGIN
    DELETE FROM url_changes WHERE url_changes.job_id = p_job;
    duplicates := 0;
    SELECT array_agg(DISTINCT f.urls_file_id), array_agg(DISTINCT f.urls_job_id)
      INTO v_carried, v_carried_jobs
      FROM sitemap_files f WHERE f.job_id = p_job AND f.urls_file_id IS NOT NULL;
    IF v_carried IS NOT NULL AND EXISTS (SELECT 1 FROM sitemap_files f
                                          WHERE f.job_id = p_job AND f.urls_file_id IS NULL
                                            AND f.stored_urls > 0) THEN
        WITH dropped AS (
            DELETE FROM sitemap_urls_stored u
             USING sitemap_urls_stored mine
             CROSS JOIN LATERAL sitemap_worker_url_hit(mine.loc, v_carried_jobs, v_carried) hit
             WHERE mine.job_id = p_job AND u.id = mine.id
            RETURNING u.sitemap_file_id
        ), per_file AS (
            UPDATE sitemap_files f SET stored_urls = f.stored_urls - d.n
              FROM (SELECT sitemap_file_id, count(*) AS n FROM dropped GROUP BY 1) d
             WHERE f.id = d.sitemap_file_id
            RETURNING d.n
        )
        SELECT coalesce(sum(n), 0) INTO duplicates FROM per_file;
    END IF;
    IF p_previous IS NULL THEN
        RETURN NEXT;  -- nothing to compare against
        RETURN;
    END IF;
    -- Files with URL rows only: the rest (indexes, errors, missing well-known paths) add
    -- nothing to either side.
    SELECT array_agg(DISTINCT coalesce(f.urls_file_id, f.id)) INTO v_new
      FROM sitemap_files f WHERE f.job_id = p_job AND f.stored_urls > 0;
    SELECT array_agg(DISTINCT coalesce(f.urls_file_id, f.id)) INTO v_old
      FROM sitemap_files f WHERE f.job_id = p_previous AND f.stored_urls > 0;
    v_new := coalesce(v_new, '{}');
    v_old := coalesce(v_old, '{}');
    IF v_new @> v_old AND v_old @> v_new THEN
        added := 0; removed := 0; changed := 0;  -- every file carried over: nothing moved
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT coalesce(array_agg(k), '{}'), coalesce(array_agg(DISTINCT j), '{}')
      INTO v_shared, v_shared_jobs
      FROM (SELECT DISTINCT coalesce(f.urls_file_id, f.id) AS k,
                            coalesce(f.urls_job_id, f.job_id) AS j
              FROM sitemap_files f
             WHERE f.job_id = p_job AND coalesce(f.urls_file_id, f.id) = ANY(v_old)) s;
    -- LATERAL: each file's rows by the (job_id, sitemap_file_id) index, never a scan of
    -- every stored URL; the two sides then meet in one merge of sorted lists.
    WITH n AS MATERIALIZED (
        SELECT DISTINCT ON (u.loc) u.loc, u.lastmod
          FROM sitemap_files f
          CROSS JOIN LATERAL (
                SELECT s.loc, s.lastmod FROM sitemap_urls_stored s
                 WHERE s.job_id = coalesce(f.urls_job_id, f.job_id)
                   AND s.sitemap_file_id = coalesce(f.urls_file_id, f.id)) u
         WHERE f.job_id = p_job AND f.stored_urls > 0
           AND coalesce(f.urls_file_id, f.id) <> ALL(v_shared)
         ORDER BY u.loc
    ), p AS MATERIALIZED (
        SELECT DISTINCT ON (u.loc) u.loc, u.lastmod, f.url AS file_url
          FROM sitemap_files f
          CROSS JOIN LATERAL (
                SELECT s.loc, s.lastmod FROM sitemap_urls_stored s
                 WHERE s.job_id = coalesce(f.urls_job_id, f.job_id)
                   AND s.sitemap_file_id = coalesce(f.urls_file_id, f.id)) u
         WHERE f.job_id = p_previous AND f.stored_urls > 0
           AND coalesce(f.urls_file_id, f.id) <> ALL(v_shared)
         ORDER BY u.loc
    ), moved AS MATERIALIZED (
        SELECT n.loc AS new_loc, n.lastmod AS new_mod, p.loc AS old_loc, p.lastmod AS old_mod,
               p.file_url
          FROM n FULL JOIN p ON p.loc = n.loc
         WHERE n.loc IS NULL OR p.loc IS NULL OR n.lastmod IS DISTINCT FROM p.lastmod
    ), found AS (
        SELECT 'added' AS change, m.new_loc AS loc, NULL::timestamptz AS before,
               m.new_mod AS after
          FROM moved m
          LEFT JOIN LATERAL sitemap_worker_url_hit(m.new_loc, v_shared_jobs, v_shared) hit
            ON true
         WHERE m.old_loc IS NULL AND hit IS NULL
        UNION ALL
        SELECT 'removed', m.old_loc, m.old_mod, NULL
          FROM moved m
          LEFT JOIN LATERAL sitemap_worker_url_hit(m.old_loc, v_shared_jobs, v_shared) hit
            ON true
         WHERE m.new_loc IS NULL AND hit IS NULL
           AND (p_complete
                OR EXISTS (SELECT 1 FROM sitemap_files r
                            WHERE r.job_id = p_job AND md5(r.url) = md5(m.file_url)
                              AND r.status = 'ok' AND NOT r.truncated))
        UNION ALL
        SELECT 'changed', m.new_loc, m.old_mod, m.new_mod
          FROM moved m
         WHERE m.new_loc IS NOT NULL AND m.old_loc IS NOT NULL
    ), written AS (
        INSERT INTO url_changes (domain_id, job_id, change, loc, lastmod_before, lastmod_after)
        SELECT p_domain, p_job, found.change, found.loc, found.before, found.after FROM found
        RETURNING url_changes.change
    )
    SELECT count(*) FILTER (WHERE w.change = 'added'),
           count(*) FILTER (WHERE w.change = 'removed'),
           count(*) FILTER (WHERE w.change = 'changed')
      INTO added, removed, changed
      FROM written w;
    RETURN NEXT;
END $$;

-- One row when one of the given files' URL rows (of the given jobs) holds p_loc, else none:
-- an index probe of (job_id, loc), or of md5(loc) for the long ones. A set-returning SQL
-- function, so that the planner inlines it into the LATERAL join that calls it.
CREATE FUNCTION sitemap_worker_url_hit(p_loc text, p_jobs bigint[], p_files bigint[])
RETURNS SETOF integer LANGUAGE sql STABLE AS $$
SELECT 1 FROM sitemap_urls_stored o
 WHERE octet_length(p_loc) <= 2000
   AND o.job_id = ANY(p_jobs) AND o.loc = p_loc AND octet_length(o.loc) <= 2000
   AND o.sitemap_file_id = ANY(p_files)
UNION ALL
SELECT 1 FROM sitemap_urls_stored o
 WHERE octet_length(p_loc) > 2000
   AND o.job_id = ANY(p_jobs) AND md5(o.loc) = md5(p_loc) AND octet_length(o.loc) > 2000
   AND o.sitemap_file_id = ANY(p_files)
LIMIT 1
$$;
