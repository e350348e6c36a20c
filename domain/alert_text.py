"""The token alert message: Telegram HTML built from untrusted feed data.

Pure functions, no I/O. Every string that came from the feed (symbol, name, channel names,
usernames, addresses) is hostile until `sanitize` or a strict pattern has cleared it: a channel
called ``</code><a href="...">`` must show up as text, never as markup or a link.
"""

from __future__ import annotations

import html
import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

from domain.events import CallerLine, TokenInfo
from domain.identifiers import is_solana_address

__all__ = [
    "LABELS",
    "MAX_CALLERS_SHOWN",
    "MAX_MESSAGE_LENGTH",
    "CallerLine",
    "DigestPart",
    "format_age",
    "format_usd",
    "is_solana_address",
    "render_alert",
    "render_digest",
    "render_digest_line",
    "safe_username",
    "sanitize",
]

# Telegram refuses texts over 4096 UTF-16 code units; staying strictly below leaves no edge case.
MAX_MESSAGE_LENGTH = 4096
MAX_CALLERS_SHOWN = 10
SYMBOL_MAX = 20
NAME_MAX = 64
CHANNEL_NAME_MAX = 64
INVALID_ADDRESS_MAX = 64

_USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{4,32}$")
# Letters that render as nothing, used to fake blank or look-alike names.
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_ZWJ = "\u200d"
_MAX_COMBINING_RUN = 3  # enough for real scripts, stops "Zalgo" text from towering over the chat

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "mcap": "Market cap",
        "liquidity": "Liquidity",
        "holders": "Holders",
        "age": "Age",
        "called_by": "Called by ({n})",
        "win_rate": "win rate",
        "avg_gain": "avg gain",
        "more": "+{n} more",
        "seen": "Seen",
        "ago": "{age} ago",
        "unknown": "unknown",
        "unverified_address": "unverified address",
        "no_symbol": "no symbol",
        "digest_title": "📦 <b>{n} alerts</b> came faster than Telegram lets a bot send them one by one{part}:",
        "digest_part": " ({i}/{total})",
        "channels_short": "{n} ch.",
        "s": "s",
        "m": "m",
        "h": "h",
        "d": "d",
    },
    "ru": {
        "mcap": "Капитализация",
        "liquidity": "Ликвидность",
        "holders": "Холдеры",
        "age": "Возраст",
        "called_by": "Коллы каналов ({n})",
        "win_rate": "винрейт",
        "avg_gain": "ср. рост",
        "more": "и ещё {n}",
        "seen": "Замечен",
        "ago": "{age} назад",
        "unknown": "неизвестно",
        "unverified_address": "непроверенный адрес",
        "no_symbol": "без тикера",
        "digest_title": (
            "📦 <b>{n} алертов</b> пришли быстрее, чем Telegram позволяет боту отправлять их по одному{part}:"
        ),
        "digest_part": " ({i}/{total})",
        "channels_short": "{n} кан.",
        "s": " с",
        "m": " мин",
        "h": " ч",
        "d": " д",
    },
}


# ------------------------------------------------------------------ sanitizing


def _clean_chars(text: str) -> str:
    """Drop control, format (bidi, zero-width), surrogate, private-use and unassigned characters."""
    out: list[str] = []
    combining = 0
    for index, char in enumerate(text):
        category = unicodedata.category(char)
        if char in "\t\n\r\x0b\x0c" or category in ("Zs", "Zl", "Zp"):
            out.append(" ")  # \n, \t, U+2028 ... become one space after collapsing
            combining = 0
            continue
        if char == _ZWJ:
            # Keep the joiner only inside an emoji sequence (👨‍💻); elsewhere it hides text.
            previous = out[-1] if out else ""
            following = text[index + 1] if index + 1 < len(text) else ""
            if (
                previous
                and following
                and (unicodedata.category(previous) in ("So", "Sk") or previous == "\ufe0f")
                and unicodedata.category(following) == "So"
            ):
                out.append(char)
            continue
        if category[0] == "C" or char in _INVISIBLE_LETTERS:
            continue
        if category in ("Mn", "Me"):
            combining += 1
            if combining > _MAX_COMBINING_RUN:
                continue
        else:
            combining = 0
        out.append(char)
    return "".join(out)


def sanitize(text: object, max_len: int) -> str:
    """Feed text made safe to put between HTML tags: cleaned, collapsed, capped, escaped.

    The cap counts characters of the cleaned text (an ellipsis marks a cut), before escaping,
    so a name full of ``&`` cannot grow past ``max_len`` visible characters.
    """
    if text is None:
        return ""
    cleaned = " ".join(_clean_chars(str(text)).split())
    if len(cleaned) > max_len:
        cleaned = cleaned[: max(max_len - 1, 0)].rstrip() + "…"
    return html.escape(cleaned, quote=True)


def safe_username(username: object) -> str | None:
    """A Telegram username fit for a t.me link, or None; one leading '@' is tolerated."""
    if not isinstance(username, str):
        return None
    candidate = username[1:] if username.startswith("@") else username
    return candidate if _USERNAME_RE.match(candidate) else None


# ------------------------------------------------------------------ number formatting


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _trim_zeros(number: str) -> str:
    return number.rstrip("0").rstrip(".") if "." in number else number


def format_usd(value: float | None) -> str | None:
    """Compact dollars: $980, $41.3K, $1.25M, $3.1B; None for missing or nonsense values."""
    number = _finite(value)
    if number is None or number < 0:
        return None
    if number < 1:
        return f"${number:.2f}" if number else "$0"
    if number >= 999.995e12:
        return ">$999T"  # no real token is worth this; also keeps Decimal within its precision
    whole = int(Decimal(repr(number)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if whole < 1000:
        return f"${whole}"
    for divisor, suffix, places in (
        (1_000, "K", "0.1"),
        (1_000_000, "M", "0.01"),
        (1_000_000_000, "B", "0.01"),
        (1_000_000_000_000, "T", "0.01"),
    ):
        # Decimal half-up: 41250 is "$41.3K" as people round, not float's "$41.2K".
        scaled = (Decimal(repr(number)) / divisor).quantize(Decimal(places), rounding=ROUND_HALF_UP)
        if scaled < 1000:
            return f"${_trim_zeros(str(scaled))}{suffix}"
    return ">$999T"


def _format_count(value: int | None) -> str | None:
    number = _finite(value)
    if number is None or number < 0:
        return None
    return f"{int(number):,}"


def _format_percent(share: float | None) -> str | None:
    number = _finite(share)
    if number is None or not 0 <= number <= 1:
        return None
    return f"{_trim_zeros(f'{number * 100:.1f}')}%"


def _format_multiple(gain: float | None) -> str | None:
    number = _finite(gain)
    if number is None or number < 0:
        return None
    return f"{_trim_zeros(f'{number:.1f}' if number < 100 else f'{number:.0f}')}x"


def format_age(seconds: float, language: str = "en") -> str:
    """45s, 12m, 3h 5m, 2d 4h: the two largest units are enough to judge a token's age."""
    labels = _labels(language)
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [(days, "d"), (hours, "h")]
    elif hours:
        parts = [(hours, "h"), (minutes, "m")]
    elif minutes:
        parts = [(minutes, "m"), (secs, "s")] if minutes < 10 else [(minutes, "m")]
    else:
        parts = [(secs, "s")]
    # "3h 0m" reads worse than "3h": a zero second unit is left out.
    shown = [parts[0], *(part for part in parts[1:] if part[0])]
    return " ".join(f"{amount}{labels[unit]}" for amount, unit in shown)


def _utc(moment: datetime) -> datetime:
    # Naive datetimes are taken as UTC, which is what every feed in this project sends.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _labels(language: str) -> dict[str, str]:
    base = (language or "en").split("-")[0].lower()
    return LABELS.get(base, LABELS["en"])


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# ------------------------------------------------------------------ the alert


def _caller_line(caller: CallerLine, labels: dict[str, str]) -> str:
    channel = caller.channel
    username = safe_username(channel.username)
    name = sanitize(channel.name, CHANNEL_NAME_MAX)
    if not name:
        name = f"@{username}" if username else sanitize(f"#{channel.id}", CHANNEL_NAME_MAX)
    # Only a validated username ever reaches an href; the visible name is escaped text.
    shown = f'<a href="https://t.me/{username}">{name}</a>' if username else name
    details: list[str] = []
    win_rate = _format_percent(channel.win_rate)
    if win_rate is not None:
        details.append(f"{labels['win_rate']} {win_rate}")
    gain = _format_multiple(channel.avg_gain)
    if gain is not None:
        details.append(f"{labels['avg_gain']} {gain}")
    if caller.called_at is not None:
        details.append(_utc(caller.called_at).strftime("%H:%M"))
    return f"• {shown}" + (f" · {' · '.join(details)}" if details else "")


def _distinct(callers: Sequence[CallerLine]) -> list[CallerLine]:
    seen: set[str] = set()
    result: list[CallerLine] = []
    for caller in callers:
        key = caller.channel.id
        if key not in seen:
            seen.add(key)
            result.append(caller)
    return result


def render_alert(
    token: TokenInfo,
    callers: Sequence[CallerLine],
    *,
    seen_at: datetime,
    now: datetime | None = None,
    language: str = "en",
) -> str:
    """The alert for `token` in Telegram HTML, always shorter than Telegram's 4096 limit.

    Callers are listed in the order given (duplicates by channel id dropped), at most
    MAX_CALLERS_SHOWN and only as many as fit; the rest are summed up as "+N more".
    `now`, when given and well after `seen_at`, adds how long ago the call was seen, so a
    delayed alert says so.
    """
    labels = _labels(language)
    unknown = labels["unknown"]

    symbol = sanitize(token.symbol, SYMBOL_MAX) or labels["no_symbol"]
    name = sanitize(token.name, NAME_MAX)
    title = f"🚨 <b>{symbol}</b>" + (f" · {name}" if name else "")

    address_ok = is_solana_address(token.address)
    if address_ok:
        address_line = f"<code>{token.address}</code>"
    else:
        raw = sanitize(token.address, INVALID_ADDRESS_MAX) or unknown
        address_line = f"⚠️ {labels['unverified_address']}: {raw}"

    if token.created_at is not None:
        age = format_age((_utc(seen_at) - _utc(token.created_at)).total_seconds(), language)
    else:
        age = unknown
    facts = [
        f"💰 {labels['mcap']}: {format_usd(token.market_cap_usd) or unknown}",
        f"💧 {labels['liquidity']}: {format_usd(token.liquidity_usd) or unknown}",
        f"👥 {labels['holders']}: {_format_count(token.holders) or unknown}",
        f"⏱ {labels['age']}: {age}",
    ]
    links: list[str] = []
    if address_ok and (token.chain or "solana").lower() == "solana":
        address = token.address
        links.append(
            f'<a href="https://dexscreener.com/solana/{address}">DexScreener</a> | '
            f'<a href="https://pump.fun/coin/{address}">pump.fun</a> | '
            f'<a href="https://solscan.io/token/{address}">Solscan</a>'
        )
    seen = f"🕒 {labels['seen']}: {_utc(seen_at).strftime('%H:%M:%S')} UTC"
    if now is not None:
        delay = (_utc(now) - _utc(seen_at)).total_seconds()
        if delay >= 60:
            seen += f" ({labels['ago'].format(age=format_age(delay, language))})"

    head = f"{title}\n{address_line}\n\n" + "\n".join(facts)
    tail = "\n".join([*links, seen])
    distinct = _distinct(callers)
    if not distinct:
        return f"{head}\n\n{tail}"

    header = f"📣 {labels['called_by'].format(n=len(distinct))}:"
    more_line = labels["more"].format(n=len(distinct))  # the longest "+N more" there can be
    # What is left for caller lines once everything else, separators included, is counted.
    budget = MAX_MESSAGE_LENGTH - 1 - _utf16_len(f"{head}\n\n{header}\n{more_line}\n\n{tail}")
    shown: list[str] = []
    for caller in distinct[:MAX_CALLERS_SHOWN]:
        line = _caller_line(caller, labels)
        cost = _utf16_len(line) + 1  # with its newline
        if cost > budget:
            break
        shown.append(line)
        budget -= cost
    channel_lines = [header, *shown]
    if len(distinct) > len(shown):
        channel_lines.append(labels["more"].format(n=len(distinct) - len(shown)))
    return f"{head}\n\n" + "\n".join(channel_lines) + f"\n\n{tail}"


# ------------------------------------------------------------------ the digest


def render_digest_line(
    token: TokenInfo, callers: Sequence[CallerLine], *, seen_at: datetime, language: str = "en"
) -> str:
    """One alert as a line of a digest: symbol (linked to DexScreener), market cap, channels, time."""
    labels = _labels(language)
    symbol = sanitize(token.symbol, SYMBOL_MAX) or labels["no_symbol"]
    if is_solana_address(token.address):
        symbol = f'<a href="https://dexscreener.com/solana/{token.address}">{symbol}</a>'
    parts = [
        f"• <b>{symbol}</b>",
        format_usd(token.market_cap_usd) or labels["unknown"],
        labels["channels_short"].format(n=len(_distinct(callers))),
        _utc(seen_at).strftime("%H:%M UTC"),
    ]
    line = " · ".join(parts)
    if is_solana_address(token.address):
        line += f"\n  <code>{token.address}</code>"
    return line


class DigestPart(NamedTuple):
    """One message of a digest: its HTML and how many of the digest's lines, in order, it carries."""

    html: str
    lines: int


def render_digest(lines: Sequence[str], language: str = "en") -> list[DigestPart]:
    """Alerts merged into as few messages as Telegram's length limit allows, every line in one.

    Lines are kept whole and in order; when they do not fit one message they continue in the
    next, each part numbered ("(1/3)") under the same title. No line is ever summed up: a
    subscriber must see every alert merged here. A single line longer than a message (none that
    `render_digest_line` makes) goes alone in its part.
    """
    if not lines:
        return []
    labels = _labels(language)
    count = len(lines)
    # Room for the lines under the widest title a part can have: never more parts than lines.
    widest = labels["digest_title"].format(n=count, part=labels["digest_part"].format(i=count, total=count))
    budget = MAX_MESSAGE_LENGTH - 1 - _utf16_len(widest) - 2  # the title's blank line
    groups: list[list[str]] = []
    used = 0
    for line in lines:
        cost = _utf16_len(line)
        if groups and groups[-1] and used + 1 + cost <= budget:
            groups[-1].append(line)
            used += 1 + cost  # with the newline before it
        else:
            groups.append([line])
            used = cost
    parts: list[DigestPart] = []
    for index, group in enumerate(groups, start=1):
        part = labels["digest_part"].format(i=index, total=len(groups)) if len(groups) > 1 else ""
        title = labels["digest_title"].format(n=count, part=part)
        parts.append(DigestPart(title + "\n\n" + "\n".join(group), len(group)))
    return parts
