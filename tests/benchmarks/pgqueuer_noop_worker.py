"""PgQueuer 1.6.0 with its defaults (one QueueManager, batch 10, no task cap) and a no-op
`noop` entrypoint, as a process of its own for queue_issue_method.py: prints a line once its
listener answers a NOTIFY round trip, runs until SIGTERM.

    python -m tests.benchmarks.pgqueuer_noop_worker postgresql://...
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta
from typing import Any

import asyncpg


async def main(dsn: str) -> None:
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.errors import FailingListenerError

    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Any) -> None:
        return None

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, qm.shutdown.set)
    worker = asyncio.create_task(qm.run())
    deadline = time.monotonic() + 15
    while True:
        try:
            await qm.listener_healthy(timeout=timedelta(seconds=0.5))
            break
        except FailingListenerError:
            if time.monotonic() > deadline:
                raise
    print("pgqueuer worker ready", file=sys.stderr, flush=True)
    await worker
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
