"""What a job type is: a name, the payload model validated before the handler runs, and the
handler. Its own module so the job modules and the registry both import it, never each other."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from ..context import Detach, JobContext

# A handler returns the job's result, None (an empty result), or DETACH (it ends later).
Handler = Callable[["JobContext", Any], Awaitable["dict[str, Any] | Detach | None"]]


@dataclass(frozen=True, slots=True)
class JobType:
    """A job type: its payload model (validated before the handler runs) and handler."""

    name: str
    payload_model: type[BaseModel]
    handler: Handler
