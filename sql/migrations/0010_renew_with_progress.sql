-- sitemap-worker schema, version 0010: the end-of-phase check gets a name that says what it
-- does. sitemap_worker_renew_with_progress is sitemap_worker_renew for one job that also
-- records the phase's progress: it renews the lease and returns the id only while the
-- caller still owns the 'processing' job, so a phase whose job was cancelled or taken over
-- rolls back. Same statement as sitemap_worker_progress (0001), which stays for workers of
-- an older version still running during an upgrade; nothing in this version calls it.

CREATE OR REPLACE FUNCTION sitemap_worker_renew_with_progress(p_id bigint, p_owner text,
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
