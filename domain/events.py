"""The one internal event type every feed is adapted into.

Feeds differ (the contract's alert feed, PumpPortal); everything after the adapters sees only
these frozen dataclasses. Fields the feed may omit are Optional; nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from domain.filters import ChannelFacts


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
class ChannelRef:
    id: str
    name: str | None = None
    username: str | None = None


@dataclass(frozen=True, slots=True)
class CallEvent:
    """A Telegram channel called a token (alert feed `call`)."""

    token: TokenInfo
    channel: ChannelRef
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
    """A channel's latest statistics (alert feed `channel`); win_rate is a share 0..1."""

    id: str
    name: str | None = None
    username: str | None = None
    win_rate: float | None = None
    avg_gain: float | None = None
    calls: int | None = None
    source: str = "feed"
    received_at: float = field(default=0.0, compare=False)
    kind: Literal["channel"] = "channel"

    @property
    def key(self) -> str:
        return f"channel:{self.id}:{self.win_rate!r}:{self.avg_gain!r}:{self.calls!r}"


@dataclass(frozen=True, slots=True)
class CallerLine:
    """One channel that called the token, as the alert lists it; fields are raw feed values."""

    channel_id: str
    name: str | None = None
    username: str | None = None
    win_rate: float | None = None  # share 0..1, as the feed sends it
    avg_gain: float | None = None  # a multiple, 2.7 means 2.7x
    called_at: datetime | None = None

    @classmethod
    def of(
        cls, channel: ChannelRef, called_at: datetime | None = None, facts: ChannelFacts | None = None
    ) -> CallerLine:
        """From the call's ChannelRef and the channel's latest statistics (when known)."""
        return cls(
            channel_id=str(channel.id),
            name=channel.name,
            username=channel.username or (facts.username if facts else None),
            win_rate=facts.win_rate if facts else None,
            avg_gain=facts.avg_gain if facts else None,
            called_at=called_at,
        )


Event = CallEvent | CreateEvent | MigrateEvent | PriceEvent | ChannelStatsEvent
