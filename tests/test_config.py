"""Settings and the command line: exact names, exit 2 with one line naming the setting, no secrets shown."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import SettingsError, load_settings, require
from bot.logs import redact, setup_logging

SETTING_NAMES = (
    "BOT_TOKEN TELEGRAM_API_URL ADMIN_IDS REDIS_URL DATABASE_URL STREAM_URL STREAM_POLL_URL "
    "PUMPPORTAL_URL PUMPPORTAL_API_KEY HTTP_HOST HTTP_PORT WEBHOOK_URL SOLANA_RPC_URL SOL_RECEIVER "
    "NOWPAYMENTS_API_URL NOWPAYMENTS_API_KEY NOWPAYMENTS_IPN_SECRET PUBLIC_BASE_URL LOG_DIR "
    "SOL_AMOUNT_TOLERANCE SOL_ORDER_MINUTES"
).split()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path


def _alertbot(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_defaults_match_the_contract(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.bot_token is None
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.admin_ids == []
    assert settings.redis_url is None and settings.database_url is None
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8080)
    assert settings.solana_rpc_url == ["https://api.mainnet-beta.solana.com"]
    assert settings.nowpayments_api_url == "https://api.nowpayments.io/v1"
    assert settings.log_dir == Path("./logs")


def test_sol_payment_settings(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.sol_amount_tolerance, settings.sol_order_minutes) == (Decimal(0), 30)
    monkeypatch.setenv("SOL_AMOUNT_TOLERANCE", "0.00001")
    monkeypatch.setenv("SOL_ORDER_MINUTES", "45")
    settings = load_settings()
    assert (settings.sol_amount_tolerance, settings.sol_order_minutes) == (Decimal("0.00001"), 45)


def test_lists_are_comma_separated(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", " 11, 22,33 ")
    monkeypatch.setenv("SOLANA_RPC_URL", "http://a.invalid, http://b.invalid")
    settings = load_settings()
    assert settings.admin_ids == [11, 22, 33]
    assert settings.solana_rpc_url == ["http://a.invalid", "http://b.invalid"]


def test_dot_env_file_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("HTTP_PORT=9191\nADMIN_IDS=5\n")
    settings = load_settings()
    assert settings.http_port == 9191 and settings.admin_ids == [5]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HTTP_PORT", "eighty"),
        ("HTTP_PORT", "70000"),
        ("ADMIN_IDS", "12,abc"),
        ("STREAM_URL", "http://x"),
        ("REDIS_URL", "mysql://x"),
        ("BOT_TOKEN", "not-a-token"),
        ("SOL_AMOUNT_TOLERANCE", "-0.1"),
        ("SOL_AMOUNT_TOLERANCE", "some"),
        ("SOL_ORDER_MINUTES", "0"),
    ],
)
def test_invalid_setting_names_itself(clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.name == name
    assert str(caught.value).startswith(f"{name}: invalid")
    assert "expected" in str(caught.value)


def test_require_names_the_missing_setting(clean_env: Path) -> None:
    with pytest.raises(SettingsError, match="^BOT_TOKEN: missing"):
        require(load_settings(), "BOT_TOKEN")


def test_version_prints_the_installed_version(clean_env: Path) -> None:
    from importlib.metadata import version

    result = _alertbot(["--version"], {}, clean_env)
    assert result.returncode == 0
    assert result.stdout.strip() == f"alertbot {version('token-alert-bot')}"


def test_run_without_bot_token_exits_2_naming_it(clean_env: Path) -> None:
    result = _alertbot(["run"], {}, clean_env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "BOT_TOKEN" in lines[0] and "missing" in lines[0]


def test_invalid_value_exits_2_and_never_echoes_a_secret(clean_env: Path) -> None:
    result = _alertbot(["run"], {"BOT_TOKEN": "123:secret-value", "HTTP_PORT": "nope"}, clean_env)
    assert result.returncode == 2
    assert "HTTP_PORT" in result.stderr and "secret-value" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_migrate_without_database_url_exits_2(clean_env: Path) -> None:
    result = _alertbot(["migrate"], {}, clean_env)
    assert result.returncode == 2 and "DATABASE_URL" in result.stderr


def test_migrate_applies_to_database_url(clean_env: Path, database_url: str) -> None:
    first = _alertbot(["migrate"], {"DATABASE_URL": database_url}, clean_env)
    assert first.returncode == 0, first.stderr
    assert "0001" in first.stdout
    second = _alertbot(["migrate"], {"DATABASE_URL": database_url}, clean_env)
    assert second.returncode == 0 and "applied 0 migration" in second.stdout


def test_redaction_hides_tokens_and_url_passwords() -> None:
    line = (
        "GET https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/getMe redis://:hunter2@db:6379/0"
    )
    cleaned = redact(line, ["hunter2"])
    assert "AAHdqTcv" not in cleaned and "hunter2" not in cleaned
    assert "postgresql://user:***@h/db" == redact("postgresql://user:pw@h/db")


def test_log_files_are_created_and_redacted(tmp_path: Path) -> None:
    setup_logging(tmp_path, ["s3cr3t-value"], console_level=None)
    try:
        logging.getLogger("alertbot.payments").info("paid with key s3cr3t-value")
        logging.getLogger("alertbot.sent").info("sent to 42")
        logging.getLogger("alertbot.redis.errors").error("redis://:pw@host down")
        for handler in logging.getLogger().handlers + logging.getLogger("alertbot.payments").handlers:
            handler.flush()
        for name in (
            "bot.log",
            "payments.log",
            "rediserror.log",
            "redisperformance.log",
            "sent_notifications.log",
            "user_settings.log",
        ):
            assert (tmp_path / name).exists(), name
        payments = (tmp_path / "payments.log").read_text()
        assert "paid with key ***" in payments and "s3cr3t" not in payments
        assert "redis://:***@host" in (tmp_path / "rediserror.log").read_text()
        assert "s3cr3t" not in (tmp_path / "bot.log").read_text()
    finally:
        for logger in [
            logging.getLogger(),
            *(
                logging.getLogger(n)
                for n in (
                    "alertbot.payments",
                    "alertbot.sent",
                    "alertbot.redis.errors",
                    "alertbot.redis.performance",
                    "alertbot.settings",
                )
            ),
        ]:
            for handler in list(logger.handlers):
                if getattr(handler, "_alertbot", False):
                    logger.removeHandler(handler)
                    handler.close()
