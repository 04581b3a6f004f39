-- The dashboard's Domains pages (worker/dashboard/domains_list.py, domain_page.py). The list,
-- the row and its scans come from the API's own statements (api_domains.sql, through
-- worker/api/domain_ops.py); only the page's "recent changes" box is its own.

-- name: dash_domain_recent_changes :many
-- A domain's latest changes, newest first: its id first (a scalar subquery on the unique
-- index; the tenant test is written as in api_domain_get so that index serves it), then
-- url_changes_domain_idx backwards. A join instead is planned for one change per domain and
-- sorts them all (47 ms for a domain with 200,000 changes, against well under 1 ms).
-- $1 tenant (null: jobs without one; the caller already checked the key may see it),
-- $2 normalised name, $3 rows.
SELECT id, job_id, change, loc, lastmod_before, lastmod_after, detected_at
  FROM url_changes
 WHERE domain_id = (SELECT id FROM domains
                     WHERE (tenant_id = $1::text OR ($1::text IS NULL AND tenant_id IS NULL))
                       AND domain = $2)
 ORDER BY id DESC
 LIMIT $3;
