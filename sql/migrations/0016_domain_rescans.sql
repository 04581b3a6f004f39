-- sitemap-worker schema, version 0016: domains watched over time (issue 19), the behaviour.
--
-- 1. Storage that grows with change. The URL rows move to `sitemap_urls_stored`, one row per
--    URL and the scan that READ it. A re-scan that finds a sitemap file unchanged (a 304, or
--    the same body hash) stores no URL of it: its sitemap_files row points at the rows it
--    carries over (urls_job_id, urls_file_id: always the scan that read them). `sitemap_urls`
--    becomes a view with the same columns as the old table, so `SELECT ... FROM sitemap_urls
--    WHERE job_id = N` still returns every URL job N saw, read afresh or carried over.
--    Deleting a file row (prune, DELETE FROM jobs) deletes its URL rows only when no other
--    file row still points at them.
-- 2. Each sitemap_scan keeps its domain: the worker links the job to its domain row when the
--    scan starts (domain_scan_jobs; the worker knows the normalised name), and a row trigger
--    on jobs, whose WHEN clause lets only a sitemap_scan's end through, writes domain_scans
--    and the domain's last-scan columns in the transaction that ends the job.
-- 3. Recurring scans: rescan_interval sets next_scan_at (jittered) by trigger;
--    sitemap_worker_enqueue_due_scans, called by every worker every few seconds, enqueues
--    each due domain once (FOR UPDATE SKIP LOCKED), never while a scan of it is pending or
--    running.
-- 4. Changes: sitemap_worker_scan_changes compares a scan with the previous completed one
--    of its domain, reading only the URL rows of files that are not shared by both.

-- 1. Storage ------------------------------------------------------------------------------

ALTER TABLE sitemap_urls RENAME TO sitemap_urls_stored;
ALTER SEQUENCE sitemap_urls_id_seq RENAME TO sitemap_urls_stored_id_seq;
ALTER TABLE sitemap_urls_stored RENAME CONSTRAINT sitemap_urls_pkey TO sitemap_urls_stored_pkey;
-- Per file, in id order: the view's join and a job's keyset pages (one range per file).
DROP INDEX sitemap_urls_job_file_idx;
CREATE INDEX sitemap_urls_stored_file_idx ON sitemap_urls_stored (job_id, sitemap_file_id, id);

COMMENT ON TABLE sitemap_urls_stored IS
    'URL rows as read by the scan that fetched their file; read them through the sitemap_urls view';
COMMENT ON COLUMN sitemap_urls_stored.job_id IS
    'the job that read the URL (no foreign key: rows go with the last sitemap file pointing at them)';
COMMENT ON COLUMN sitemap_urls_stored.sitemap_file_id IS
    'the sitemap_files.id that read the URL (no foreign key: see sitemap_worker_drop_file_urls)';

ALTER TABLE sitemap_files
    ADD COLUMN urls_job_id  bigint,
    ADD COLUMN urls_file_id bigint,
    ADD COLUMN stored_urls  integer NOT NULL DEFAULT 0,
    ADD COLUMN content_hash text,
    ADD COLUMN children     text[];

-- Files of earlier scans: their URL rows are their own (url_count is close enough for what
-- reads it: whether a file has rows at all; they have no content_hash, so none is carried).
UPDATE sitemap_files SET stored_urls = url_count WHERE url_count > 0;

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

CREATE INDEX sitemap_files_urls_file_idx ON sitemap_files (urls_file_id)
    WHERE urls_file_id IS NOT NULL;

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

-- A file row's URL rows go once no file row points at them any more: the one that read
-- them, or a later scan's that carried them over.
CREATE OR REPLACE FUNCTION sitemap_worker_drop_file_urls() RETURNS trigger
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

CREATE OR REPLACE FUNCTION sitemap_worker_truncate_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE sitemap_urls_stored;
    RETURN NULL;
END $$;

-- 2. Each scan keeps its domain ------------------------------------------------------------

ALTER TABLE domains
    ADD COLUMN scan_payload  jsonb,
    ADD COLUMN active_job_id bigint;

COMMENT ON COLUMN domains.scan_payload IS
    'the payload of its last scan: what a recurring scan enqueues (null: {"domain": domain})';
COMMENT ON COLUMN domains.active_job_id IS
    'its latest scan while pending or running: no recurring scan is enqueued meanwhile';

CREATE TABLE domain_scan_jobs (
    job_id    bigint PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    domain_id bigint NOT NULL REFERENCES domains (id) ON DELETE CASCADE
);

COMMENT ON TABLE domain_scan_jobs IS
    'which domain each sitemap_scan scans: written when it starts (or is enqueued by the schedule)';

CREATE INDEX domain_scan_jobs_domain_idx ON domain_scan_jobs (domain_id);

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
    v_now timestamptz := statement_timestamp();
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
