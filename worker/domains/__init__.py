"""Domains watched over time (issue 19): each scan's domain and what changed (record.py),
recurring scans enqueued by the worker fleet itself (schedule.py)."""
