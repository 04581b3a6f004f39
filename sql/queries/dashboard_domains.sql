-- The dashboard's Domains pages (worker/dashboard/domains_list.py, domain_page.py). The list,
-- the row and its scans come from the API's own statements (api_domains.sql, through
-- worker/api/domain_ops.py); only the page's "recent changes" box is its own.

-- name: dash_domain_recent_changes :many
-- A domain's latest changes, newest first (one domains row by its unique key, then
-- url_changes_domain_idx backwards). $1 tenant (null: jobs without one; the caller already
-- checked the key may see it), $2 normalised name, $3 rows.
SELECT c.id, c.job_id, c.change, c.loc, c.lastmod_before, c.lastmod_after, c.detected_at
  FROM domains d
  JOIN url_changes c ON c.domain_id = d.id
 WHERE d.tenant_id IS NOT DISTINCT FROM $1::text AND d.domain = $2
 ORDER BY c.id DESC
 LIMIT $3;
