"""A tiny server speaking Redis' wire protocol (RESP2) that says it is an old Redis.

    async with OldRedisServer("5.0.0") as server:
        RedisManager.from_url(server.url)      # start() reads INFO and refuses this version

It answers what a client says while connecting (PING, CLIENT ..., SELECT, AUTH) and INFO with
`redis_version:<version>`; any other command gets the error Redis 5 gives for a command it lacks,
HELLO (RESP3, from Redis 6.0 on) included, in Redis 5's words. Each command it receives is kept in
`commands`.
"""

from __future__ import annotations

import asyncio
import contextlib


class OldRedisServer:
    def __init__(self, version: str = "5.0.0", host: str = "127.0.0.1") -> None:
        self.version = version
        self.host = host
        self.commands: list[list[str]] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    async def start(self) -> OldRedisServer:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def __aenter__(self) -> OldRedisServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def info(self) -> str:
        return f"# Server\r\nredis_version:{self.version}\r\nredis_mode:standalone\r\nos:Linux\r\n"

    def answer(self, command: list[str]) -> bytes:
        name = command[0].upper() if command else ""
        if name == "PING":
            return b"+PONG\r\n"
        if name == "INFO":
            body = self.info().encode()
            return b"$%d\r\n%s\r\n" % (len(body), body)
        if name in ("CLIENT", "SELECT", "AUTH"):
            return b"+OK\r\n"
        args = "".join(f"`{arg}`, " for arg in command[1:])
        return f"-ERR unknown command `{command[0] if command else ''}`, with args beginning with: {args}\r\n".encode()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                command = await _read_command(reader)
                if command is None:
                    return
                self.commands.append(command)
                writer.write(self.answer(command))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()


async def _read_command(reader: asyncio.StreamReader) -> list[str] | None:
    """One command as clients send it: an array of bulk strings (None at the end of the stream)."""
    header = await reader.readline()
    if not header:
        return None
    if not header.startswith(b"*"):  # an inline command, as typed into telnet
        return header.decode().split()
    parts: list[str] = []
    for _ in range(int(header[1:])):
        size = await reader.readline()
        if not size.startswith(b"$"):
            raise ValueError("expected a bulk string")
        data = await reader.readexactly(int(size[1:]) + 2)
        parts.append(data[:-2].decode())
    return parts
