-- sitemap-worker schema, version 0003: batch jobs that fan out into child jobs.
--
-- A `sitemap_batch` job inserts one child `sitemap_scan` per domain (parent_id set) and
-- then detaches: it stays 'processing' with no owner and no lease, so no worker slot is
-- held while the children run and the claim never picks it up again. This trigger keeps
-- the parent's progress (children ended / children) as children end, and completes the
-- parent, with each domain's outcome in its result, when the last child has ended. One
-- domain's failure never fails the others or the batch.

CREATE OR REPLACE FUNCTION jobs_finish_batches() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Statement triggers fire even for UPDATEs of no rows (this function's own, too):
    -- leave at once unless a child job is among the rows.
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE parent_id IS NOT NULL) THEN
        RETURN NULL;
    END IF;
    WITH parents AS (
        SELECT DISTINCT n.parent_id AS id
          FROM new_rows n JOIN old_rows o USING (id)
         WHERE n.parent_id IS NOT NULL AND n.status IS DISTINCT FROM o.status
           AND n.status IN ('completed', 'failed', 'cancelled')
    ), tally AS (
        SELECT c.parent_id AS id,
               count(*) AS total,
               count(*) FILTER (WHERE c.status IN ('completed', 'failed', 'cancelled')) AS ended,
               count(*) FILTER (WHERE c.status = 'completed') AS completed,
               count(*) FILTER (WHERE c.status = 'failed') AS failed,
               count(*) FILTER (WHERE c.status = 'cancelled') AS cancelled,
               coalesce(sum((c.result ->> 'sitemap_count')::bigint), 0) AS sitemaps,
               coalesce(sum((c.result ->> 'url_count')::bigint), 0) AS urls,
               coalesce(sum((c.result ->> 'error_count')::bigint), 0) AS errors,
               jsonb_agg(jsonb_build_object(
                   'domain', c.payload ->> 'domain', 'job_id', c.id, 'status', c.status,
                   'url_count', (c.result ->> 'url_count')::bigint,
                   'sitemap_count', (c.result ->> 'sitemap_count')::bigint,
                   'error', c.error) ORDER BY c.id) AS outcomes
          FROM jobs c JOIN parents p ON c.parent_id = p.id
         GROUP BY c.parent_id
    )
    UPDATE jobs b
       SET progress = t.ended::real / t.total,
           status = CASE WHEN t.ended = t.total THEN 'completed' ELSE b.status END,
           result = CASE WHEN t.ended = t.total THEN jsonb_build_object(
                        'domain_count', t.total, 'completed', t.completed, 'failed', t.failed,
                        'cancelled', t.cancelled, 'sitemap_count', t.sitemaps,
                        'url_count', t.urls, 'error_count', t.errors, 'domains', t.outcomes)
                    ELSE b.result END
      FROM tally t
     WHERE b.id = t.id AND b.status = 'processing' AND b.job_type = 'sitemap_batch';
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_finish_batches ON jobs;
CREATE TRIGGER jobs_finish_batches AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_finish_batches();

-- Cancelling a batch cancels what its children have not finished.
CREATE OR REPLACE FUNCTION jobs_cancel_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM new_rows WHERE status = 'cancelled' AND job_type = 'sitemap_batch') THEN
        RETURN NULL;  -- also ends the recursion through this function's own UPDATE
    END IF;
    UPDATE jobs c SET status = 'cancelled'
      FROM new_rows n JOIN old_rows o USING (id)
     WHERE c.parent_id = n.id AND n.status = 'cancelled' AND o.status <> 'cancelled'
       AND c.status IN ('pending', 'processing');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS jobs_cancel_children ON jobs;
CREATE TRIGGER jobs_cancel_children AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_cancel_children();
