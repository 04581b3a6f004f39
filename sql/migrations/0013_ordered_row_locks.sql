-- sitemap-worker schema, version 0013: the heartbeat's renewal and the batched completion
-- lock their rows in id order first. Both are multi-row UPDATEs of one worker's own jobs, and
-- a job can be in both at once (its outcome write starts while a renewal that listed it is in
-- flight); locked in different orders, the two deadlocked now and then (seen in the load
-- test: "Process A waits for ShareLock ... sitemap_worker_complete / sitemap_worker_renew").

CREATE OR REPLACE FUNCTION sitemap_worker_renew(p_owner text, p_ids bigint[],
                                     p_lease_seconds double precision)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
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

CREATE OR REPLACE FUNCTION sitemap_worker_complete(p_owner text, p_ids bigint[], p_results text[])
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
BEGIN
    -- Rows locked in id order, as sitemap_worker_renew does: a renewal and a completion
    -- of the same worker's jobs in flight at once never deadlock (migration 0013).
    PERFORM 1 FROM jobs WHERE id = ANY(p_ids) AND owner = p_owner ORDER BY id
        FOR NO KEY UPDATE;
    RETURN QUERY
    UPDATE jobs j
       SET status = 'completed', progress = 1, result = done.result::jsonb, error = NULL,
           owner = NULL, lease_expires_at = NULL
      FROM unnest(p_ids, p_results) AS done (id, result)
     WHERE j.id = done.id AND j.owner = p_owner AND j.status = 'processing'
    RETURNING j.id;
END $$;
