"""The sitemap_scan job's own parts: crawl orchestration (crawl), the hand-over from fetch
and parse to storage (pipeline) and the writes (store). The scanning itself (discovery,
fetching, parsing) is the worker.scan library, which knows nothing of the database."""
