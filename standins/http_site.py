"""An aiohttp application served on a local port, as each HTTP stand-in needs one."""

from __future__ import annotations

from aiohttp import web


class LocalSite:
    """Serves one application on `host:port` (port 0: a free one) until stopped."""

    def __init__(self, what: str) -> None:
        self.what = what  # named in the error when asked for its address before starting
        self.host = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.host, self.port = host, int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.port = 0

    @property
    def origin(self) -> str:
        """`http://host:port`; RuntimeError before `start`."""
        if not self.port:
            raise RuntimeError(f"the {self.what} is not started")
        return f"http://{self.host}:{self.port}"
