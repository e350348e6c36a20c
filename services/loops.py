"""A background loop that can be woken early and always stops.

On Python 3.11 `asyncio.wait_for` (used inside redis-py) swallows a cancel that lands just as
its inner call ends, so a loop stopped by cancel alone may run on; its body checks `stopping`,
which `stop` sets before it cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundLoop:
    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = False
        self.wake = asyncio.Event()  # set to run the next pass now
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if not self.running:
            self._task = asyncio.create_task(run(), name=self.name)

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less when woken or stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        self.wake.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self.stopping = True
        self.wake.set()
        task.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self.stopping = False
