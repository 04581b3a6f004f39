"""`sitemap-worker serve`: the HTTP API (`/api/v3/...`) and the dashboard (`/`), one aiohttp app."""
