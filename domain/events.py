"""The one internal event type every feed is adapted into.

Feeds differ (the contract's alert feed, PumpPortal); everything after the adapters sees only
these frozen dataclasses. Fields the feed may omit are Optional; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal


@dataclass(frozen=True, slots=True)
class TokenInfo:
    address: str
    symbol: str | None = None
    name: str | None = None
    chain: str = "solana"
    market_cap_usd: float | None = None
    liquidity_usd: float | None = None
    holders: int | None = None
    price_usd: float | None = None
    created_at: datetime | None = None
    image_url: str | None = None


@dataclass(frozen=True, slots=True)
class Channel:
    """A Telegram channel that calls tokens, with its latest statistics; None: not known.

    A call names its channel (id, name, username); a `channel` frame adds the statistics.
    """

    id: str
    name: str | None = None
    username: str | None = None
    win_rate: float | None = None  # share 0..1, as the feed sends it
    avg_gain: float | None = None  # a multiple, 2.7 means 2.7x
    calls: int | None = None
    # How filters may name the channel: its id and "@username", lowercased; kept, as matching
    # reads it for every caller of every call.
    refs: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        refs = {self.id}
        if self.username:
            refs.add("@" + self.username.lstrip("@").lower())
        object.__setattr__(self, "refs", frozenset(refs))

    def merged(self, newer: Channel) -> Channel:
        """`newer`'s values where it has them, ours elsewhere."""
        return Channel(
            id=self.id,
            name=newer.name or self.name,
            username=newer.username or self.username,
            win_rate=newer.win_rate if newer.win_rate is not None else self.win_rate,
            avg_gain=newer.avg_gain if newer.avg_gain is not None else self.avg_gain,
            calls=newer.calls if newer.calls is not None else self.calls,
        )


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A Telegram channel called a token (alert feed `call`)."""

    token: TokenInfo
    channel: Channel  # as the call names it: no statistics
    called_at: datetime
    source: str = "feed"
    # Wall-clock time (time.time(), seconds) the frame arrived, taken once at the stream's edge;
    # every latency figure up to the send is measured from it.
    received_at: float = field(default=0.0, compare=False)
    kind: Literal["call"] = "call"

    @property
    def key(self) -> str:
        return f"call:{self.token.address}:{self.channel.id}:{self.called_at.isoformat()}"


@dataclass(frozen=True, slots=True)
class CreateEvent:
    """A new token appeared on chain (PumpPortal `create`); no channel has called it yet."""

    token: TokenInfo
    created_at: datetime
    source: str = "pumpportal"
    received_at: float = field(default=0.0, compare=False)
    kind: Literal["create"] = "create"

    @property
    def key(self) -> str:
        return f"create:{self.token.address}"


@dataclass(frozen=True, slots=True)
class MigrateEvent:
    """A token left its bonding curve for an AMM pool (PumpPortal `migrate`)."""

    address: str
    pool: str | None
    ts: datetime
    signature: str | None = None
    source: str = "pumpportal"
    received_at: float = field(default=0.0, compare=False)
    kind: Literal["migrate"] = "migrate"

    @property
    def key(self) -> str:
        return f"migrate:{self.address}:{self.signature or self.ts.isoformat()}"


@dataclass(frozen=True, slots=True)
class PriceEvent:
    """A token's latest price (alert feed `price`, PumpPortal trades)."""

    address: str
    price_usd: float
    market_cap_usd: float | None
    ts: datetime
    source: str = "feed"
    received_at: float = field(default=0.0, compare=False)
    kind: Literal["price"] = "price"

    @property
    def key(self) -> str:
        return f"price:{self.address}:{self.ts.isoformat()}:{self.price_usd!r}"


@dataclass(frozen=True, slots=True)
class ChannelStatsEvent:
    """A channel's latest statistics (alert feed `channel`)."""

    channel: Channel
    source: str = "feed"
    received_at: float = field(default=0.0, compare=False)
    kind: Literal["channel"] = "channel"

    @property
    def key(self) -> str:
        c = self.channel
        return f"channel:{c.id}:{c.win_rate!r}:{c.avg_gain!r}:{c.calls!r}"


@dataclass(frozen=True, slots=True)
class CallerLine:
    """A channel as one token's alert lists it: the channel, and when it called that token.

    Not a channel record of its own: the call time belongs to the (token, channel) pair.
    """

    channel: Channel
    called_at: datetime | None = None


Event = CallEvent | CreateEvent | MigrateEvent | PriceEvent | ChannelStatsEvent
