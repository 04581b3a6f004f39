"""Log setup: human-readable lines by default, JSON lines for log collectors.

Every line written while a job runs carries that job's id: the engine sets it in a context
variable inside the job's own task, so the scanner's lines (a fetch warning, say) get it
without passing ids around. Lines about a job written elsewhere (the outcome writer) pass
`extra={"job_id": ...}`.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

current_job: ContextVar[tuple[int, str] | None] = ContextVar("current_job", default=None)

# LogRecord attributes that are not a caller's `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "job_prefix",
}


class JobFields(logging.Filter):
    """Adds job_id / job_type from the running job's context when the call gave none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            job = current_job.get()
            record.job_id, record.job_type = job if job else (None, None)
        return True


class TextFormatter(logging.Formatter):
    """`time level message`; a job line that does not name its job gets `[job N]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(job_prefix)s%(message)s")
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The standard `2026-01-31 12:00:00,123`, its seconds part formatted once a second:
        a busy worker writes two lines per job, and strftime was a quarter of each."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second, self._second_text = second, super().formatTime(record, datefmt)[:-4]
        return f"{self._second_text},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        job_id = getattr(record, "job_id", None)
        named = job_id is None or f"job {job_id}" in record.message
        record.job_prefix = "" if named else f"[job {job_id}] "
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, job_id/job_type when about a
    job, any other `extra` fields, and the traceback as `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    """Configure the root logger once, on stderr. No line shows its caller's file, thread
    or process, so records skip collecting them (the logging docs' "Optimization"): a
    quarter of the cost of each of a busy worker's two lines per job."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(JobFields())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)
