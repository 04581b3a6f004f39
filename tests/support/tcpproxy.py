"""A TCP proxy on 127.0.0.1 that can turn into a black hole, for half-open connection tests.

Why our own: the failure to simulate is a peer that silently stops answering (a NAT or
firewall dropping state, a cable pulled) while both sockets stay open. Nothing on loopback
does that by itself, and a mock would not exercise the driver's real socket handling.

    proxy = TcpProxy(target_port)
    await proxy.start()            # then connect to 127.0.0.1:proxy.port
    proxy.blackhole()              # established connections: bytes read are dropped, nothing
                                   # is written, no FIN, no RST; new connections: accepted,
                                   # but nothing passes (the upstream is not even dialled)
    proxy.heal()                   # forward again; connections held meanwhile go through
    await proxy.close()

Established connections lose what was sent while the hole was open (their byte streams are
broken for good, as after a real partition whose peer state was lost); connections made
during it only wait, as a SYN retransmitted until the path heals would.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards every accepted connection to 127.0.0.1:target_port, in both directions."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.accepted = 0  # connections accepted so far (held ones included)
        self.dropped_bytes = 0  # bytes swallowed by the black hole
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._generation = (
            0  # bumped by blackhole(): a connection's bytes older than that are dropped
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def forwarding(self) -> bool:
        return self._forwarding.is_set()

    def dsn(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    def blackhole(self) -> None:
        """Stop forwarding in both directions, silently; sockets stay open."""
        self._generation += 1
        self._forwarding.clear()

    def heal(self) -> None:
        self._forwarding.set()

    async def close(self) -> None:
        """Stop listening and drop every connection (this one does send FIN/RST)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            await self._forwarding.wait()  # held, not refused: the client only sees silence
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            self._writers.add(upstream_w)
            await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Copy until EOF. While the hole is open, whatever arrives is dropped; an EOF or a
        reset that arrives then is passed on only once it heals (the peer learns nothing)."""
        while True:
            generation = self._generation
            try:
                data = await src.read(65536)
            except OSError:  # a reset: like EOF, and not passed on through the hole either
                data = b""
            if not self._forwarding.is_set() or generation != self._generation:
                self.dropped_bytes += len(data)
                if not data:
                    await self._forwarding.wait()  # keep the other side open and silent
                    return
                continue
            if not data:
                with contextlib.suppress(OSError):
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()
