"""The oldest Redis the bot works with is checked at start, and an older one refused in one line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from managers.redis_manager import RedisManager, RedisTooOld, version_tuple
from standins.old_redis import OldRedisServer
from standins.telegram import DEFAULT_TOKEN
from tests.test_runtime import free_port


def test_version_text() -> None:
    assert version_tuple("6.2.14") == (6, 2, 14) and version_tuple("7.2.4-rc1") == (7, 2)
    assert version_tuple("5.0.0") < (6, 2) <= version_tuple("6.2.0") and version_tuple("") < (6, 2)


async def test_an_old_redis_is_refused_at_start() -> None:
    async with OldRedisServer("5.0.0") as server:
        manager = RedisManager.from_url(server.url)
        with pytest.raises(RedisTooOld) as refused:
            await manager.start()
        assert ["INFO", "server"] in server.commands
    message = str(refused.value)
    assert "\n" not in message and "5.0.0" in message and "6.2 or newer" in message and "XAUTOCLAIM" in message
    assert not manager.available


async def test_a_recent_redis_is_accepted(redis_url: str) -> None:
    async with RedisManager.from_url(redis_url) as manager:
        assert manager.available
        assert manager.server_version and version_tuple(manager.server_version) >= (6, 2)


async def test_run_refuses_an_old_redis_in_one_line(database_url: str, tmp_path: Path) -> None:
    async with OldRedisServer("5.0.14") as server:
        url = server.url
        env = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME", "LANG")}
        env.update(
            BOT_TOKEN=DEFAULT_TOKEN,
            REDIS_URL=server.url,
            DATABASE_URL=database_url,
            LOG_DIR=str(tmp_path / "logs"),
            TELEGRAM_API_URL=f"http://127.0.0.1:{free_port()}",
            HTTP_PORT=str(free_port()),
            PYTHONPATH=str(Path(__file__).resolve().parent.parent),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "run", env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = stderr.decode()
    assert process.returncode == 2, text
    assert text.strip().splitlines()[-1] == (
        f"alertbot: Redis at {url} is version 5.0.14; the bot needs Redis 6.2 "
        "or newer (its alert queue uses XAUTOCLAIM)"
    )
    assert "Traceback" not in text
