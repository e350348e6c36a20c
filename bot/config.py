"""Typed settings, read from the environment and `.env`, named as docs/contract.md names them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.multipliers import TrackingRules

# What each setting expects, in the words an operator reads when it is wrong.
EXPECTED: dict[str, str] = {
    "BOT_TOKEN": "the bot token from @BotFather, like 123456:ABC-DEF...",
    "TELEGRAM_API_URL": "an http(s) URL of a Bot API server",
    "ADMIN_IDS": "comma-separated numeric Telegram user ids",
    "REDIS_URL": "a redis:// or rediss:// URL",
    "DATABASE_URL": "a postgresql:// URL",
    "STREAM_URL": "a ws:// or wss:// URL",
    "STREAM_POLL_URL": "an http(s) URL",
    "PUMPPORTAL_URL": "a ws:// or wss:// URL",
    "PUMPPORTAL_API_KEY": "a PumpPortal API key",
    "HTTP_HOST": "a host name or IP address to listen on",
    "HTTP_PORT": "a port number 1..65535",
    "WEBHOOK_URL": "a public https URL",
    "SOLANA_RPC_URL": "one or more comma-separated http(s) URLs",
    "SOL_RECEIVER": "a base58 Solana address",
    "NOWPAYMENTS_API_URL": "an http(s) URL",
    "NOWPAYMENTS_API_KEY": "a NOWPayments API key",
    "NOWPAYMENTS_IPN_SECRET": "a NOWPayments IPN secret",
    "PUBLIC_BASE_URL": "an http(s) URL",
    "LOG_DIR": "a folder path",
    "PAID_BROADCAST": "true or false",
    "ALERT_DIGEST_THRESHOLD": "a whole number 2..100",
    "ALERT_MAX_DELAY": "seconds, more than 0 and at most 3600",
    "SOL_AMOUNT_TOLERANCE": "an amount of SOL, 0 or more",
    "SOL_ORDER_MINUTES": "a whole number of minutes 1..1440",
    "METRICS_TOKEN": "a secret of at least 16 characters that Prometheus sends as a bearer token",
    "CONSUMER_NAME": "a name for this instance: letters, digits, '.', '_' or '-', at most 64",
    "MONITOR_INTERVAL_SECONDS": "seconds between health checks, more than 0 and at most 3600",
    "MONITOR_REDIS_DOWN_SECONDS": "seconds, 0 or more",
    "MONITOR_STREAM_DOWN_SECONDS": "seconds, 0 or more",
    "MONITOR_QUEUE_PERCENT": "a percentage, more than 0 and at most 100",
    "MONITOR_MEMORY_PERCENT": "a percentage, more than 0 and at most 100",
    "MONITOR_MEMORY_LIMIT_MB": "megabytes, 0 for the container's limit (or the machine's memory)",
    "MONITOR_BURST_WINDOW_SECONDS": "seconds, more than 0 and at most 86400",
    "MONITOR_RATE_LIMITED_COUNT": "a whole number, 1 or more",
    "MONITOR_FAILURES_COUNT": "a whole number, 1 or more",
    "MONITOR_START_NOTICE": "true or false",
    "FOLLOWUP_DAYS": "a whole number of days 1..30",
    "FOLLOWUP_DEAD_SHARE": "a share of the peak, 0 or more and below 1 (0: never dead by price)",
    "FOLLOWUP_DEAD_MINUTES": "a whole number of minutes 1..10080",
    "FOLLOWUP_SILENT_HOURS": "a whole number of hours 1..720",
    "DEXSCREENER_URL": "an http(s) URL, or empty for no DexScreener polling",
    "DEXSCREENER_RATE": "requests a minute, a whole number 1..300",
    "PRICE_STALE_SECONDS": "seconds, a whole number 5..3600",
}


class SettingsError(Exception):
    """A setting is missing or invalid; `str()` is the one line shown to the operator."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}; expected {EXPECTED.get(name, 'a valid value')}")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_scheme(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if not value.startswith(tuple(f"{scheme}://" for scheme in schemes)):
        raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    admin_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    redis_url: SecretStr | None = None
    database_url: SecretStr | None = None
    stream_url: str | None = None
    stream_poll_url: str | None = None
    pumpportal_url: str | None = None
    pumpportal_api_key: SecretStr | None = None
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    webhook_url: str | None = None
    solana_rpc_url: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["https://api.mainnet-beta.solana.com"]
    )
    sol_receiver: str | None = None
    nowpayments_api_url: str = "https://api.nowpayments.io/v1"
    nowpayments_api_key: SecretStr | None = None
    nowpayments_ipn_secret: SecretStr | None = None
    public_base_url: str | None = None
    log_dir: Path = Path("./logs")
    # Plans beyond the contract's table: the free trial a new user may start once (0: none)...
    trial_days: int = Field(default=3, ge=0, le=30)
    # ...the days an inviter gets when someone they invited first pays (0: none)...
    referral_days: int = Field(default=7, ge=0, le=365)
    # ...what a SOL payment may fall short of the price by and still count as paid (rounding in wallets).
    sol_amount_tolerance: Decimal = Field(default=Decimal(0), ge=0)
    # ...and how long a SOL order waits for its payment (a Solana Pay request is shown that long).
    sol_order_minutes: int = Field(default=30, ge=1, le=1440)
    # Delivery settings beyond the contract's table:
    # send with allow_paid_broadcast, up to 1,000 messages a second (Telegram charges Stars).
    paid_broadcast: bool = False
    # A subscriber's queued alerts are merged into one digest from this many on...
    alert_digest_threshold: int = Field(default=5, ge=2, le=100)
    # ...or once the oldest has waited this many seconds.
    alert_max_delay: float = Field(default=60.0, gt=0, le=3600)
    # Operations beyond the contract's table:
    # /metrics answers only requests that carry this as a bearer token (unset: open).
    metrics_token: SecretStr | None = None
    # This instance's name as a reader of the alert queue; stable across restarts, so a restart
    # resumes the sends it had taken (default: sender-<host name>).
    consumer_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    # Monitoring: how often it checks, and after how long (or from what share) the admins hear.
    monitor_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    monitor_redis_down_seconds: float = Field(default=300.0, ge=0)
    monitor_stream_down_seconds: float = Field(default=60.0, ge=0)
    monitor_queue_percent: float = Field(default=80.0, gt=0, le=100)
    monitor_memory_percent: float = Field(default=80.0, gt=0, le=100)
    monitor_memory_limit_mb: int = Field(default=0, ge=0)
    # 429s or failed deliveries keep coming: this many within the window opens an incident,
    # a whole window without one closes it.
    monitor_burst_window_seconds: float = Field(default=300.0, gt=0, le=86400)
    monitor_rate_limited_count: int = Field(default=10, ge=1)
    monitor_failures_count: int = Field(default=20, ge=1)
    monitor_start_notice: bool = True
    # /channels ranks a channel only from this many resolved calls on (fewer are shown apart).
    channels_min_resolved: int = Field(default=10, ge=1, le=10_000)
    # Follow-ups after an alert (2x, 3x, 5x...): each alert is followed this many days, and its
    # token no longer once dead: its market cap below FOLLOWUP_DEAD_SHARE of its peak for
    # FOLLOWUP_DEAD_MINUTES, or no price at all for FOLLOWUP_SILENT_HOURS.
    followup_days: int = Field(default=7, ge=1, le=30)
    followup_dead_share: float = Field(default=0.1, ge=0, lt=1)
    followup_dead_minutes: int = Field(default=60, ge=1, le=10080)
    followup_silent_hours: int = Field(default=24, ge=1, le=720)
    # A followed token with no price from the feed or PumpPortal for PRICE_STALE_SECONDS is asked
    # of DexScreener's tokens endpoint (30 a request, DEXSCREENER_RATE requests a minute).
    dexscreener_url: str | None = "https://api.dexscreener.com"
    dexscreener_rate: int = Field(default=300, ge=1, le=300)
    price_stale_seconds: int = Field(default=60, ge=5, le=3600)

    @field_validator("admin_ids", "solana_rpc_url", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("solana_rpc_url")
    @classmethod
    def _rpc_urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one URL is needed")
        for url in value:
            _check_scheme(url, ("http", "https"))
        return value

    @field_validator("telegram_api_url", "nowpayments_api_url")
    @classmethod
    def _http_required(cls, value: str) -> str:
        checked = _check_scheme(value, ("http", "https"))
        if checked is None:
            raise ValueError("must not be empty")
        return checked.rstrip("/")

    @field_validator("stream_poll_url", "public_base_url", "webhook_url", "dexscreener_url")
    @classmethod
    def _http_optional(cls, value: str | None) -> str | None:
        return _check_scheme(value, ("http", "https"))

    @field_validator("stream_url", "pumpportal_url")
    @classmethod
    def _ws_optional(cls, value: str | None) -> str | None:
        return _check_scheme(value, ("ws", "wss"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        _check_scheme(value.get_secret_value(), ("redis", "rediss", "unix"))
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        _check_scheme(value.get_secret_value(), ("postgresql", "postgres"))
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("too short")
        return value

    @field_validator("consumer_name", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("bot_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        head, sep, tail = value.get_secret_value().partition(":")
        if not (sep and head.isdigit() and tail):
            raise ValueError("not a bot token")
        return value

    @property
    def tracking_rules(self) -> TrackingRules:
        """How long alerted tokens are followed for follow-ups."""
        return TrackingRules(
            window=timedelta(days=self.followup_days),
            dead_share=self.followup_dead_share,
            dead_after=timedelta(minutes=self.followup_dead_minutes),
            silent_after=timedelta(hours=self.followup_silent_hours),
        )

    @property
    def admin_id_set(self) -> frozenset[int]:
        return frozenset(self.admin_ids)

    def secrets(self) -> list[str]:
        """Every secret value in force, so log redaction can hide them wherever they appear."""
        values: list[str] = []
        for name in (
            "bot_token",
            "pumpportal_api_key",
            "nowpayments_api_key",
            "nowpayments_ipn_secret",
            "metrics_token",
        ):
            secret = getattr(self, name)
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        return values


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; any problem becomes a `SettingsError` naming the one setting at fault.

    The message never repeats the value given, since it may be a secret.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise SettingsError(field.upper(), f"invalid ({reason})") from None


def require(settings: Settings, *names: str) -> None:
    """Fail with a `SettingsError` for the first of `names` that is not set."""
    for name in names:
        if getattr(settings, name.lower()) in (None, "", []):
            raise SettingsError(name.upper(), "missing")
