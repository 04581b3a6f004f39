"""Benchmarks: run from a source checkout, by `sitemap-worker bench` or as scripts."""
