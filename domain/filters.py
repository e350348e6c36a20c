"""Subscriber filters: parsing what a user types, and deciding whether a token or a channel passes.

Pure functions only (no I/O), so the rules of docs/contract.md, "Filters", read in one place.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from domain.events import Channel

MAX_CHANNELS_IN_FILTER = 100


# What can be wrong with a typed value; the bot words each in the user's language
# (texts "reason_<kind>", filled with the error's `values`).
REASON_KINDS: tuple[str, ...] = (
    "usd",
    "whole_number",
    "minutes",
    "minutes_range",
    "percent",
    "multiple",
    "channels",
    "channels_max",
)


class FilterValueError(ValueError):
    """A filter name or value the user typed is wrong; the message says what is accepted.

    `kind` (one of REASON_KINDS, or "" for errors that are not about one value) and `values` let
    the bot say the same in the user's language; the message itself is English, for logs and
    admin commands.
    """

    def __init__(self, message: str, kind: str = "", **values: object) -> None:
        super().__init__(message)
        self.kind = kind
        self.values = values


_USD_RE = re.compile(r"^\$?\s*(\d+(?:[.,]\d+)?)\s*([kmb])?\s*\$?$", re.IGNORECASE)
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9}
_CHANNEL_ID_RE = re.compile(r"^-?\d{1,20}$")
_CHANNEL_USERNAME_RE = re.compile(r"^@?([A-Za-z][A-Za-z0-9_]{3,31})$")


def parse_usd(raw: str) -> float:
    """'50k' -> 50000, '1.5m' -> 1500000, '$2,5M' -> 2500000, '1200' -> 1200."""
    text = raw.strip().replace("_", "").replace(" ", "")
    if "," in text and "." not in text and re.fullmatch(r"\$?\d{1,3}(,\d{3})+\$?", text):
        text = text.replace(",", "")  # 1,500,000 as thousands separators
    match = _USD_RE.match(text)
    if not match:
        raise FilterValueError("a USD amount such as 50000, 50k or 1.5m", "usd")
    number = float(match.group(1).replace(",", ".")) * _SUFFIX[(match.group(2) or "").lower()]
    if not math.isfinite(number) or number < 0:
        raise FilterValueError("a USD amount such as 50000, 50k or 1.5m", "usd")
    return number


def parse_int(raw: str, minimum: int = 0, maximum: int = 10**9) -> int:
    text = raw.strip().replace("_", "").replace(",", "")
    if not re.fullmatch(r"\d+", text):
        raise FilterValueError(
            f"a whole number from {minimum} to {maximum}", "whole_number", minimum=minimum, maximum=maximum
        )
    value = int(text)
    if not minimum <= value <= maximum:
        raise FilterValueError(
            f"a whole number from {minimum} to {maximum}", "whole_number", minimum=minimum, maximum=maximum
        )
    return value


def parse_minutes(raw: str) -> int:
    """Minutes; '90', '90m', '2h' and '1d' are accepted."""
    text = raw.strip().lower()
    match = re.fullmatch(r"(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?)?", text)
    if not match:
        raise FilterValueError("minutes, such as 30, 90m, 2h or 1d", "minutes")
    unit = (match.group(2) or "m")[0]
    minutes = int(match.group(1)) * {"m": 1, "h": 60, "d": 1440}[unit]
    if not 1 <= minutes <= 525_600:
        raise FilterValueError("minutes from 1 to 525600 (one year)", "minutes_range")
    return minutes


def parse_percent(raw: str) -> float:
    text = raw.strip().rstrip("%").strip()
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise FilterValueError("a percentage from 0 to 100, such as 40 or 40%", "percent") from None
    if not (math.isfinite(value) and 0 <= value <= 100):
        raise FilterValueError("a percentage from 0 to 100, such as 40 or 40%", "percent")
    return value


def parse_multiple(raw: str) -> float:
    text = raw.strip().lower().rstrip("x").strip()
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise FilterValueError("a multiple such as 2 or 2.5x", "multiple") from None
    if not (math.isfinite(value) and 0 <= value <= 1_000_000):
        raise FilterValueError("a multiple such as 2 or 2.5x", "multiple")
    return value


def normalize_channel_ref(raw: str) -> str:
    """A channel as users name it: a numeric id ('-1001234567890') or '@username' (lower-cased)."""
    text = raw.strip()
    if _CHANNEL_ID_RE.match(text):
        return text
    match = _CHANNEL_USERNAME_RE.match(text)
    if match:
        return "@" + match.group(1).lower()
    raise FilterValueError("comma-separated channel ids (like -1001234567890) or @usernames", "channels")


def parse_channels(raw: str) -> frozenset[str]:
    parts = [part for part in re.split(r"[,\s]+", raw.strip()) if part]
    if not parts:
        raise FilterValueError("comma-separated channel ids (like -1001234567890) or @usernames", "channels")
    if len(parts) > MAX_CHANNELS_IN_FILTER:
        raise FilterValueError(
            f"at most {MAX_CHANNELS_IN_FILTER} channels", "channels_max", maximum=MAX_CHANNELS_IN_FILTER
        )
    return frozenset(normalize_channel_ref(part) for part in parts)


@dataclass(frozen=True)
class FilterSpec:
    name: str
    parse: Callable[[str], Any]
    accepted: str  # what the user may type, for help and error replies
    scope: str  # "token", "channel" or "count"


FILTER_SPECS: dict[str, FilterSpec] = {
    spec.name: spec
    for spec in (
        FilterSpec("min_mcap", parse_usd, "USD, e.g. 50000, 50k or 1.5m", "token"),
        FilterSpec("max_mcap", parse_usd, "USD, e.g. 500k or 2m", "token"),
        FilterSpec("min_liquidity", parse_usd, "USD, e.g. 10k", "token"),
        FilterSpec("min_holders", lambda raw: parse_int(raw, 0, 10_000_000), "a whole number, e.g. 100", "token"),
        FilterSpec("max_age", parse_minutes, "minutes, e.g. 30, 90m or 2h", "token"),
        FilterSpec("min_win_rate", parse_percent, "percent 0..100, e.g. 40", "channel"),
        FilterSpec("min_avg_gain", parse_multiple, "a multiple, e.g. 2 or 2x", "channel"),
        FilterSpec("channels", parse_channels, "comma-separated channel ids or @usernames", "channel"),
        FilterSpec("exclude_channels", parse_channels, "comma-separated channel ids or @usernames", "channel"),
        FilterSpec("min_channels", lambda raw: parse_int(raw, 1, 100), "a whole number 1..100, default 1", "count"),
    )
}


@dataclass(frozen=True)
class Filters:
    """One subscriber's filters; None means "no bound"."""

    min_mcap: float | None = None
    max_mcap: float | None = None
    min_liquidity: float | None = None
    min_holders: int | None = None
    max_age: int | None = None  # minutes
    min_win_rate: float | None = None  # percent 0..100
    min_avg_gain: float | None = None
    channels: frozenset[str] | None = None
    exclude_channels: frozenset[str] | None = None
    min_channels: int = 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Filters:
        """From stored JSON (as `to_dict` writes it); unknown names are ignored."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in known or value is None:
                continue
            if name in ("channels", "exclude_channels"):
                value = frozenset(str(v) for v in value)
            values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "min_channels" and value == 1):
                continue
            out[f.name] = sorted(value) if isinstance(value, frozenset) else value
        return out

    def with_value(self, name: str, value: Any) -> Filters:
        return replace(self, **{name: value})

    def without(self, name: str) -> Filters:
        cleared: dict[str, Any] = {name: 1 if name == "min_channels" else None}
        return replace(self, **cleared)

    @property
    def has_channel_filters(self) -> bool:
        return any(v is not None for v in (self.min_win_rate, self.min_avg_gain, self.channels, self.exclude_channels))


def set_filter(filters: Filters, name: str, raw_value: str) -> Filters:
    """The filters with `name` set from what the user typed, or FilterValueError saying what is accepted."""
    key = name.strip().lower()
    spec = FILTER_SPECS.get(key)
    if spec is None:
        raise FilterValueError(f"unknown filter '{name[:40]}'; filters are: {', '.join(FILTER_SPECS)}")
    try:
        value = spec.parse(raw_value)
    except FilterValueError as exc:
        raise FilterValueError(f"{key} takes {exc}", exc.kind, **exc.values) from None
    updated = filters.with_value(key, value)
    if updated.min_mcap is not None and updated.max_mcap is not None and updated.min_mcap > updated.max_mcap:
        raise FilterValueError("min_mcap must not be above max_mcap")
    return updated


def unset_filter(filters: Filters, name: str) -> Filters:
    key = name.strip().lower()
    if key not in FILTER_SPECS:
        raise FilterValueError(f"unknown filter '{name[:40]}'; filters are: {', '.join(FILTER_SPECS)}")
    return filters.without(key)


@dataclass(frozen=True)
class TokenFacts:
    """What a call says of its token; any field may be unknown."""

    market_cap_usd: float | None = None
    liquidity_usd: float | None = None
    holders: int | None = None
    created_at: datetime | None = None


def token_passes(filters: Filters, token: TokenFacts, called_at: datetime) -> bool:
    """Token-level filters; a filter whose field is unknown does not pass."""
    if filters.min_mcap is not None and (token.market_cap_usd is None or token.market_cap_usd < filters.min_mcap):
        return False
    if filters.max_mcap is not None and (token.market_cap_usd is None or token.market_cap_usd > filters.max_mcap):
        return False
    if filters.min_liquidity is not None and (
        token.liquidity_usd is None or token.liquidity_usd < filters.min_liquidity
    ):
        return False
    if filters.min_holders is not None and (token.holders is None or token.holders < filters.min_holders):
        return False
    if filters.max_age is not None:
        if token.created_at is None:
            return False
        age_minutes = (called_at - token.created_at).total_seconds() / 60
        if age_minutes > filters.max_age:
            return False
    return True


def channel_passes(filters: Filters, channel: Channel) -> bool:
    """Per-channel filters against the channel's latest statistics."""
    if filters.channels is not None and not (channel.refs & filters.channels):
        return False
    if filters.exclude_channels is not None and channel.refs & filters.exclude_channels:
        return False
    if filters.min_win_rate is not None and (
        channel.win_rate is None or channel.win_rate * 100 < filters.min_win_rate - 1e-9
    ):
        return False
    if filters.min_avg_gain is not None and (channel.avg_gain is None or channel.avg_gain < filters.min_avg_gain):
        return False
    return True


def passing_channels(filters: Filters, channels: Iterable[Channel]) -> list[Channel]:
    return [channel for channel in channels if channel_passes(filters, channel)]


def token_matches(filters: Filters, token: TokenFacts, called_at: datetime, callers: Iterable[Channel]) -> bool:
    """The whole contract rule: the token passes, and enough distinct calling channels pass."""
    if not token_passes(filters, token, called_at):
        return False
    distinct = {channel.id: channel for channel in callers}
    return len(passing_channels(filters, distinct.values())) >= filters.min_channels
