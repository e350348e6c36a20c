"""An asyncio TCP proxy the tests put between a client and a real server to fake an outage.

    proxy = TcpProxy("127.0.0.1", 6379)
    await proxy.start()                 # listens on 127.0.0.1:<free port>
    client connects to proxy.url("redis", "/13")
    await proxy.stop_forwarding()       # live connections dropped, new ones reset: "Redis is down"
    await proxy.resume()                # forwarding again: "Redis is back"
    await proxy.close()

The listening socket stays open while forwarding is stopped: closing it would let the OS hand the
port to some other socket before `resume()` binds it again. New connections are accepted and reset
at once instead, which a client sees exactly like a refused connection: an immediate error.
`stop_forwarding(mode="blackhole")` instead keeps connections open and swallows the bytes, like a
network partition, for testing that clients time out rather than hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Literal

Mode = Literal["forward", "reset", "blackhole"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._server: asyncio.Server | None = None
        self._mode: Mode = "forward"
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0  # connections accepted (for tests that count reconnects)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("proxy not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def forwarding(self) -> bool:
        return self._mode == "forward"

    def address(self) -> tuple[str, int]:
        return self.listen_host, self.port

    def url(self, scheme: str = "redis", path: str = "", userinfo: str = "") -> str:
        """e.g. url("redis", "/13") -> "redis://127.0.0.1:PORT/13"."""
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{auth}{self.listen_host}:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.listen_host, 0)

    async def stop_forwarding(self, mode: Literal["reset", "blackhole"] = "reset") -> None:
        """From the client's point of view the server goes away (see the module docstring)."""
        self._mode = mode
        if mode == "reset":
            await self._drop_all()

    async def resume(self) -> None:
        """Forward new connections again. Blackholed connections are dropped (their stream is lost)."""
        self._mode = "forward"
        await self._drop_all()

    async def close(self) -> None:
        self._mode = "reset"
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting first, then drop the live connections
        await self._drop_all()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()  # on 3.12+ this waits for the connections dropped above

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- internals ---------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode == "reset":
            _reset(writer)
            return
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            if self._mode == "blackhole":
                await _swallow(reader)
                return
            try:
                up_reader, upstream_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                return
            self._writers.add(upstream_writer)
            await asyncio.gather(
                self._pipe(reader, upstream_writer),
                self._pipe(up_reader, writer),
            )
        except asyncio.CancelledError:
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._writers.discard(w)
                    _reset(w)
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self._mode == "blackhole":
                    continue  # swallowed: the peer waits for an answer that never comes
                if self._mode != "forward":
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # One side finished: end the other too, so both pipes of the pair stop.
            _reset(writer)

    async def _drop_all(self) -> None:
        for writer in list(self._writers):
            _reset(writer)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._writers.clear()


async def _swallow(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0), so the peer fails at once instead of seeing a polite EOF later."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.close()
