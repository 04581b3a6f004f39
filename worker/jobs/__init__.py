"""Job types: a small registry from `job_type` to a payload model and a handler."""

from .registry import JobType, default_registry

__all__ = ["JobType", "default_registry"]
