-- sitemap-worker schema, version 0007: cheaper page URL rows.
--
-- sitemap_urls is the one table that grows by hundreds of thousands of rows per job, and
-- PostgreSQL's CPU time per row was most of a big scan's cost (measured: 9.4 s for the
-- 500,000 URLs of `sitemap-worker bench scan`). Two changes, same guarantees:
--
-- 1. No foreign keys. They ran a referential-integrity check per inserted row (a lookup and
--    a FOR KEY SHARE lock on the job row and on the file row): a third of that time. The
--    only writer is the worker, inside a phase that first proves it owns the job (a job
--    deleted meanwhile makes the phase roll back), with the id of a file row it created for
--    that job, so the checks guarded nothing. What the keys also gave, ON DELETE CASCADE,
--    is kept by statement-level triggers on sitemap_files: deleting a job (whose files go by
--    their own foreign key) or a file deletes the file's URL rows in one set-based
--    statement; TRUNCATE ... CASCADE reaches here too.
--
-- 2. A URL is unique per job by its text, not by md5 of it. md5 keys are random, so every
--    insert landed on a random leaf page of the unique index; URLs listed in order (most
--    sitemaps) now land next to each other (measured, 500,000 rows by COPY: 2.6 s of server
--    CPU with md5, 1.6 s now). It also lets a person look a URL up directly:
--    WHERE job_id = 42 AND loc = 'https://...' AND octet_length(loc) <= 2000 (the planner
--    needs the index's condition spelled out). A btree entry must stay under ~2.7 kB, so
--    URLs over 2,000 bytes (rare, but kept) are keyed by md5 in a second partial index;
--    writers say ON CONFLICT DO NOTHING, which covers both.
--    The plain (sitemap_file_id) index becomes (job_id, sitemap_file_id), which also serves
--    every "URLs of job N" query and is cheap to maintain (job ids only grow).

-- Order matters on a database that already holds many URL rows: the index builds come first,
-- while only sitemap_urls is locked; dropping the foreign keys locks jobs and sitemap_files
-- (their referential triggers go), so it comes last and holds those locks only until commit.

CREATE UNIQUE INDEX IF NOT EXISTS sitemap_urls_job_loc_uniq
    ON sitemap_urls (job_id, loc) WHERE octet_length(loc) <= 2000;
CREATE UNIQUE INDEX IF NOT EXISTS sitemap_urls_job_long_loc_uniq
    ON sitemap_urls (job_id, md5(loc)) WHERE octet_length(loc) > 2000;
CREATE INDEX IF NOT EXISTS sitemap_urls_job_file_idx ON sitemap_urls (job_id, sitemap_file_id);
DROP INDEX IF EXISTS sitemap_urls_job_loc_key;
DROP INDEX IF EXISTS sitemap_urls_file_idx;

COMMENT ON COLUMN sitemap_urls.job_id IS
    'jobs.id (no foreign key: rows go with their sitemap file by trigger, see migration 0007)';
COMMENT ON COLUMN sitemap_urls.sitemap_file_id IS
    'sitemap_files.id (no foreign key: rows go with their file by trigger, see migration 0007)';

-- SECURITY DEFINER, as the foreign-key cascade ran: a role allowed to delete jobs (or
-- sitemap_files) needs no rights on sitemap_urls for their URL rows to go with them.
CREATE OR REPLACE FUNCTION sitemap_worker_drop_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM sitemap_urls u USING gone_files g
     WHERE u.job_id = g.job_id AND u.sitemap_file_id = g.id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION sitemap_worker_truncate_file_urls() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    TRUNCATE sitemap_urls;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS sitemap_files_drop_urls ON sitemap_files;
CREATE TRIGGER sitemap_files_drop_urls
    AFTER DELETE ON sitemap_files
    REFERENCING OLD TABLE AS gone_files
    FOR EACH STATEMENT EXECUTE FUNCTION sitemap_worker_drop_file_urls();

DROP TRIGGER IF EXISTS sitemap_files_truncate_urls ON sitemap_files;
CREATE TRIGGER sitemap_files_truncate_urls
    AFTER TRUNCATE ON sitemap_files
    FOR EACH STATEMENT EXECUTE FUNCTION sitemap_worker_truncate_file_urls();

ALTER TABLE sitemap_urls DROP CONSTRAINT IF EXISTS sitemap_urls_job_id_fkey;
ALTER TABLE sitemap_urls DROP CONSTRAINT IF EXISTS sitemap_urls_sitemap_file_id_fkey;
