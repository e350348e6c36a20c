"""Adapters from feed frames (text) to the internal events of `domain.events`; pure, no I/O.

`parse_alert_frame` reads the contract's alert feed (docs/contract.md), `parse_pumpportal_frame`
and `pumpportal_parser` PumpPortal's data WebSocket. A bad frame or identifier raises
`FrameError` with a short reason; an unknown type parses to None. What counts as bad:
docs/architecture.md, "Feed adapters".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

from domain.events import (
    CallEvent,
    Channel,
    ChannelStatsEvent,
    CreateEvent,
    Event,
    MigrateEvent,
    PriceEvent,
    TokenInfo,
)
from domain.identifiers import is_channel_id, is_solana_address, is_telegram_username

Json = dict[str, Any]

# Epoch numbers above this are milliseconds (1e11 s is the year 5138).
_MILLIS_THRESHOLD = 1e11
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)

# pump.fun and LaunchLab (bonk) tokens are minted with a fixed supply of one billion.
PUMP_TOKEN_SUPPLY = 1_000_000_000
LAMPORTS_PER_SOL = 1_000_000_000
# No bonding-curve trade moves a million SOL (a whole pump.fun curve holds ~85 SOL), so an
# integer solAmount above this is lamports, not SOL.
SOL_AMOUNT_LAMPORTS_ABOVE = 1_000_000


class FrameError(ValueError):
    """A frame that cannot be used; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PumpPortalNotice:
    """A PumpPortal control message: a subscription acknowledgement, a refusal, or other info.

    `refused` is final: PumpPortal will not stream trades to this client (no API key, or an
    unfunded one), so the stream must stop asking for them.
    """

    kind: Literal["ack", "refused", "info"]
    text: str


ParseResult = Event | PumpPortalNotice | None
Parser = Callable[[str, float], ParseResult]
"""What the stream calls with (frame text, time.perf_counter() at arrival)."""


# --- shared coercions --------------------------------------------------------------------------


def decode_object(text: str | bytes) -> Json:
    """The frame as a JSON object, or FrameError."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError("binary frame is not UTF-8") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise FrameError("invalid JSON") from None
    if not isinstance(value, dict):
        raise FrameError("not a JSON object")
    return value


def _number(value: Any) -> float | None:
    """A finite float from a number or a numeric string; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _non_negative(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number >= 0 else None


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _count(value: Any) -> int | None:
    """A non-negative whole number (212, 212.0 and "212" all qualify)."""
    number = _non_negative(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def _text(value: Any) -> str | None:
    """Stripped text; None for missing, non-string or blank values."""
    if not isinstance(value, str):
        return None
    stripped = value.strip()
    return stripped or None


def _timestamp(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO-8601 text (naive means UTC) or epoch seconds/millis."""
    if isinstance(value, str):
        raw = value.strip()
        if raw.endswith(("Z", "z")):
            raw = raw[:-1] + "+00:00"
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            epoch = _number(raw)
            return _from_epoch(epoch) if epoch is not None else None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
        return parsed if _EARLIEST <= parsed < _LATEST else None
    epoch = _number(value)
    return _from_epoch(epoch) if epoch is not None else None


def _from_epoch(epoch: float) -> datetime | None:
    if epoch > _MILLIS_THRESHOLD:
        epoch /= 1000.0
    try:
        parsed = datetime.fromtimestamp(epoch, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return parsed if _EARLIEST <= parsed < _LATEST else None


def _channel_id(value: Any) -> str | None:
    """A Telegram chat id as a string; integers are accepted and converted."""
    if isinstance(value, bool):
        return None
    text = str(value) if isinstance(value, int) else _text(value)
    return text if is_channel_id(text) else None


def _username(value: Any) -> str | None:
    """A username without its '@'; None unless it keeps Telegram's rule."""
    text = _text(value)
    name = text[1:] if text and text.startswith("@") else text
    return name if is_telegram_username(name) else None


def _address(value: Any) -> str | None:
    """A token address: Solana's base58 form, nothing else."""
    text = _text(value)
    return text if is_solana_address(text) else None


def _share(value: Any) -> float | None:
    """A share 0..1 (win_rate); anything outside is invalid."""
    number = _number(value)
    return number if number is not None and 0.0 <= number <= 1.0 else None


def _object(frame: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = frame.get(name)
    if value is None:
        raise FrameError(f"missing {name}")
    if not isinstance(value, dict):
        raise FrameError(f"invalid {name}")
    return value


def _field(frame: Mapping[str, Any], name: str, coerce: Callable[[Any], Any], label: str | None = None) -> Any:
    """A required field: missing -> 'missing X', present but unusable -> 'invalid X'."""
    label = label or name
    raw = frame.get(name)
    if raw is None:
        raise FrameError(f"missing {label}")
    value = coerce(raw)
    if value is None:
        raise FrameError(f"invalid {label}")
    return value


# --- the contract's alert feed -----------------------------------------------------------------


def parse_alert_frame(text: str | bytes, received_at: float = 0.0) -> Event | None:
    """One alert-feed frame -> CallEvent / PriceEvent / ChannelStatsEvent; unknown type -> None."""
    frame = decode_object(text)
    kind = frame.get("type")
    if kind is None:
        raise FrameError("missing type")
    if not isinstance(kind, str):
        raise FrameError("invalid type")
    builder = _ALERT_BUILDERS.get(kind)
    return builder(frame, received_at) if builder is not None else None


def _call(frame: Json, received_at: float) -> CallEvent:
    token = _object(frame, "token")
    channel = _object(frame, "channel")
    return CallEvent(
        token=TokenInfo(
            address=_field(token, "address", _address, "token.address"),
            symbol=_text(token.get("symbol")),
            name=_text(token.get("name")),
            chain=_text(token.get("chain")) or "solana",
            market_cap_usd=_non_negative(token.get("market_cap_usd")),
            liquidity_usd=_non_negative(token.get("liquidity_usd")),
            holders=_count(token.get("holders")),
            price_usd=_positive(token.get("price_usd")),
            created_at=_timestamp(token.get("created_at")),
            image_url=_text(token.get("image_url")),
        ),
        channel=Channel(
            id=_field(channel, "id", _channel_id, "channel.id"),
            name=_text(channel.get("name")),
            username=_username(channel.get("username")),
        ),
        called_at=_field(frame, "called_at", _timestamp),
        received_at=received_at,
    )


def _price(frame: Json, received_at: float) -> PriceEvent:
    return PriceEvent(
        address=_field(frame, "address", _address),
        price_usd=_field(frame, "price_usd", _positive),
        market_cap_usd=_non_negative(frame.get("market_cap_usd")),
        ts=_field(frame, "ts", _timestamp),
        received_at=received_at,
    )


def _channel(frame: Json, received_at: float) -> ChannelStatsEvent:
    return ChannelStatsEvent(
        Channel(
            id=_field(frame, "id", _channel_id),
            name=_text(frame.get("name")),
            username=_username(frame.get("username")),
            win_rate=_share(frame.get("win_rate")),
            avg_gain=_non_negative(frame.get("avg_gain")),
            calls=_count(frame.get("calls")),
        ),
        received_at=received_at,
    )


_ALERT_BUILDERS: dict[str, Callable[[Json, float], Event]] = {
    "call": _call,
    "price": _price,
    "channel": _channel,
}


# --- PumpPortal --------------------------------------------------------------------------------

# Field names differ between launchpads on the same feed (pump.fun vs LaunchLab "bonk" frames):
# look each value up under every name it is known to travel as.
_MINT_KEYS = ("mint", "token", "tokenAddress", "ca")
_TX_TYPE_KEYS = ("txType", "tx_type")
_SOL_RESERVE_KEYS = ("vSolInBondingCurve", "solInPool", "vSolInPool")
_TOKEN_RESERVE_KEYS = ("vTokensInBondingCurve", "tokensInPool", "vTokensInPool")
_MCAP_SOL_KEYS = ("marketCapSol", "market_cap_sol")
_NOTICE_KEYS = ("message", "error", "errors")
_EVENT_MARKERS = ("txType", "tx_type", "signature", *_MINT_KEYS)

_REFUSAL = re.compile(
    r"api[\s_-]?key|\bkey\b|insufficient|balance|must have|fund|unauthori[sz]ed|forbidden|not allowed|payment",
    re.IGNORECASE,
)
_ACK = re.compile(r"success|subscribed", re.IGNORECASE)


def parse_pumpportal_frame(
    text: str | bytes,
    sol_usd: float | None,
    received_at: float = 0.0,
    now: datetime | None = None,
) -> Event | PumpPortalNotice | None:
    """One PumpPortal frame -> CreateEvent / PriceEvent / MigrateEvent, a notice, or None.

    `sol_usd` is the SOL price in USD (None: unknown, so USD figures are None and trades,
    which need a USD price, are skipped). `now` stamps frames that carry no time of their own
    (PumpPortal frames usually carry none); it defaults to the wall clock.
    """
    frame = decode_object(text)
    if not any(key in frame for key in _EVENT_MARKERS):
        return _notice(frame)
    mint = _field_any(frame, _MINT_KEYS, _address, "mint")
    ts = _timestamp(frame.get("timestamp")) or now or datetime.now(UTC)
    tx_type = _tx_type(frame)
    if tx_type == "create":
        return _create(frame, mint, sol_usd, ts, received_at)
    if tx_type in ("buy", "sell"):
        return _trade(frame, mint, sol_usd, ts, received_at)
    if tx_type == "migrate":
        return MigrateEvent(
            address=mint,
            pool=_text(frame.get("pool")),
            ts=ts,
            signature=_text(frame.get("signature")),
            received_at=received_at,
        )
    return None  # a txType we do not use


def pumpportal_parser(sol_usd: Callable[[], float | None]) -> Parser:
    """A parser for the stream: PumpPortal frames priced with the SOL price of the moment."""

    def parse(text: str, received_at: float = 0.0) -> ParseResult:
        return parse_pumpportal_frame(text, sol_usd(), received_at)

    return parse


def classify_notice(text: str) -> Literal["ack", "refused", "info"]:
    """Acknowledgements first ("Successfully subscribed to keys." names keys but is no refusal)."""
    if _ACK.search(text) and not re.search(r"\bnot\b|\bfail", text, re.IGNORECASE):
        return "ack"
    if _REFUSAL.search(text):
        return "refused"
    return "info"


def _notice(frame: Json) -> PumpPortalNotice | None:
    for key in _NOTICE_KEYS:
        value = frame.get(key)
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = text.strip()[:500]
        return PumpPortalNotice(kind=classify_notice(text), text=text)
    return None  # an object we do not know: ignored like an unknown type


def _tx_type(frame: Json) -> str:
    """The transaction type; a frame without one is a trade if it moved tokens, else a create."""
    for key in _TX_TYPE_KEYS:
        value = _text(frame.get(key))
        if value is not None:
            return value.lower()
    return "buy" if frame.get("tokenAmount") is not None else "create"


def _field_any(frame: Json, keys: tuple[str, ...], coerce: Callable[[Any], Any], label: str) -> Any:
    present = [frame[key] for key in keys if frame.get(key) is not None]
    if not present:
        raise FrameError(f"missing {label}")
    for raw in present:
        value = coerce(raw)
        if value is not None:
            return value
    raise FrameError(f"invalid {label}")


def _first_positive(frame: Json, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = _positive(frame.get(key))
        if value is not None:
            return value
    return None


def sol_amount(value: Any) -> float | None:
    """PumpPortal's solAmount in SOL.

    It is SOL, as an int (`3`) or a float (`0.98`); but an integer above 1,000,000 cannot be
    SOL on a bonding curve, so it is read as lamports (divided by 1e9). A non-integral value
    above 1,000,000 fits neither reading and is treated as missing.
    """
    amount = _positive(value)
    if amount is None or amount <= SOL_AMOUNT_LAMPORTS_ABOVE:
        return amount
    return amount / LAMPORTS_PER_SOL if amount.is_integer() else None


def _curve_price_sol(frame: Json) -> float | None:
    """SOL per token from the pool's (virtual) reserves: the spot price after the trade."""
    sol = _first_positive(frame, _SOL_RESERVE_KEYS)
    tokens = _first_positive(frame, _TOKEN_RESERVE_KEYS)
    return sol / tokens if sol is not None and tokens is not None else None


def _trade_price_sol(frame: Json) -> float | None:
    """SOL per token paid in this trade, else the curve's price."""
    sol = sol_amount(frame.get("solAmount"))
    tokens = _positive(frame.get("tokenAmount"))
    if sol is not None and tokens is not None:
        return sol / tokens
    return _curve_price_sol(frame)


def _market_cap_sol(frame: Json, price_sol: float | None) -> float | None:
    """marketCapSol as sent; else the price times the fixed launchpad supply."""
    mcap = _first_positive(frame, _MCAP_SOL_KEYS)
    if mcap is None and price_sol is not None:
        mcap = price_sol * PUMP_TOKEN_SUPPLY
    return mcap


def _usd(sol: float | None, sol_usd: float | None) -> float | None:
    if sol is None or sol_usd is None or not math.isfinite(sol_usd) or sol_usd <= 0:
        return None
    return sol * sol_usd


def _create(frame: Json, mint: str, sol_usd: float | None, ts: datetime, received_at: float) -> CreateEvent:
    price_sol = _curve_price_sol(frame)
    return CreateEvent(
        token=TokenInfo(
            address=mint,
            symbol=_text(frame.get("symbol")),
            name=_text(frame.get("name")),
            chain="solana",
            market_cap_usd=_usd(_market_cap_sol(frame, price_sol), sol_usd),
            price_usd=_usd(price_sol, sol_usd),
            created_at=ts,
            # PumpPortal sends the metadata URI (a JSON document naming the image), not the image.
            image_url=_text(frame.get("uri")),
        ),
        created_at=ts,
        received_at=received_at,
    )


def _trade(frame: Json, mint: str, sol_usd: float | None, ts: datetime, received_at: float) -> PriceEvent | None:
    price_usd = _usd(_trade_price_sol(frame), sol_usd)
    if price_usd is None:
        return None  # no SOL price yet (or nothing to price with): a PriceEvent needs USD
    return PriceEvent(
        address=mint,
        price_usd=price_usd,
        market_cap_usd=_usd(_market_cap_sol(frame, _curve_price_sol(frame)), sol_usd),
        ts=ts,
        source="pumpportal",
        received_at=received_at,
    )


def pumpportal_url(base: str, api_key: str | None) -> str:
    """PumpPortal's data URL with the API key as its `api-key` query parameter (if any)."""
    if not api_key:
        return base
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}api-key={quote(api_key, safe='')}"


# ---------------------------------------------------------------------------------- DexScreener

DEXSCREENER_CHAIN = "solana"


def parse_dexscreener_tokens(
    payload: Any, asked: Iterable[str], now: datetime, received_at: float = 0.0
) -> list[PriceEvent]:
    """DexScreener's tokens endpoint answer (GET /tokens/v1/solana/{addresses}: a JSON array of
    pairs) -> one PriceEvent per asked token it lists.

    A token may trade in several pairs: the one with the most liquidity in USD where it is the
    base token gives its price (`priceUsd`, a decimal string) and market cap (`marketCap`, else
    `fdv`). Pairs of other chains or tokens, and pairs without a usable price, are skipped; an
    answer that is no array raises FrameError. The pairs carry no time of their own: `now`."""
    if not isinstance(payload, list):
        raise FrameError("not a JSON array")
    wanted = set(asked)
    best: dict[str, tuple[float, float, float | None]] = {}  # address -> (liquidity, price, market cap)
    for pair in payload:
        if not isinstance(pair, Mapping) or pair.get("chainId") != DEXSCREENER_CHAIN:
            continue
        base = pair.get("baseToken")
        address = base.get("address") if isinstance(base, Mapping) else None
        if not isinstance(address, str) or address not in wanted:
            continue
        price = _positive(pair.get("priceUsd"))
        if price is None:
            continue
        liquidity = pair.get("liquidity")
        depth = (_non_negative(liquidity.get("usd")) if isinstance(liquidity, Mapping) else None) or 0.0
        market_cap = _positive(pair.get("marketCap")) or _positive(pair.get("fdv"))
        if address not in best or depth > best[address][0]:
            best[address] = (depth, price, market_cap)
    return [
        PriceEvent(
            address=address,
            price_usd=price,
            market_cap_usd=market_cap,
            ts=now,
            source="dexscreener",
            received_at=received_at,
        )
        for address, (_, price, market_cap) in best.items()
    ]
