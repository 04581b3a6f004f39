-- sitemap-worker schema, version 0005: pruning ended jobs and what their scans stored.
--
-- CALL sitemap_worker_prune(interval '30 days');
--
-- Deletes completed, failed and cancelled jobs that ended before now() - p_older_than, with
-- their sitemap_files and sitemap_urls (ON DELETE CASCADE) and their batch children,
-- p_batch jobs at a time, committing after each batch: locks stay short, a large backlog
-- never becomes one huge transaction, and autovacuum can keep up. It walks the primary key
-- (jobs end roughly in id order), so no extra index on finished_at is paid for by every
-- completion. Call it outside a transaction block (psql autocommit, or cron); a transaction
-- pooler is fine too. A batch's still-running children keep the batch until they end.

CREATE OR REPLACE PROCEDURE sitemap_worker_prune(p_older_than interval,
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
