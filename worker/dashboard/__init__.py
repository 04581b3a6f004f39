"""The web dashboard served at `/` by `sitemap-worker serve`: server-rendered HTML pages
(overview, jobs, one job, submit, login) on the same app, keys and Scope as the HTTP API."""

from .routes import add_routes

__all__ = ["add_routes"]
