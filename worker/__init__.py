"""sitemap-worker: a Postgres-native job queue worker that scans websites' sitemaps."""

__version__ = "0.1.0"
