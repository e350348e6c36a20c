"""The alerts a feed should produce, worked out frame by frame with the plain filter rules.

Independent of the pipeline (no index, no Redis): the tests and the fault bench compare what the
bot sent with this.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from domain.events import CallEvent, Channel, ChannelStatsEvent
from domain.feed_adapters import FrameError, parse_alert_frame
from domain.filters import TokenFacts, token_matches
from domain.subscriber import Subscriber


def expected_alerts(
    frames: Iterable[dict | str], subscribers: Iterable[Subscriber], now: datetime
) -> dict[int, list[str]]:
    """telegram id -> token addresses, in the order the alerts become due."""
    channels: dict[str, dict[str, object]] = {}
    callers: dict[str, list[str]] = {}
    alerted: dict[int, list[str]] = {s.telegram_id: [] for s in subscribers}
    receiving = [s for s in subscribers if s.receives_alerts(now)]

    def remember(channel_id: str, **values: object) -> None:
        known = channels.setdefault(channel_id, {})
        for key, value in values.items():
            if value is not None and value != "":
                known[key] = value

    for frame in frames:
        text = frame if isinstance(frame, str) else json.dumps(frame)
        try:
            event = parse_alert_frame(text)
        except FrameError:
            continue
        if isinstance(event, ChannelStatsEvent):
            c = event.channel
            remember(c.id, name=c.name, username=c.username, win_rate=c.win_rate, avg_gain=c.avg_gain)
        elif isinstance(event, CallEvent):
            remember(event.channel.id, name=event.channel.name, username=event.channel.username)
            token_callers = callers.setdefault(event.token.address, [])
            if event.channel.id not in token_callers:
                token_callers.append(event.channel.id)
            facts = [
                Channel(
                    c,
                    username=_str(channels[c].get("username")),
                    win_rate=_num(channels[c].get("win_rate")),
                    avg_gain=_num(channels[c].get("avg_gain")),
                )
                for c in token_callers
            ]
            t = event.token
            token = TokenFacts(t.market_cap_usd, t.liquidity_usd, t.holders, t.created_at)
            for subscriber in receiving:
                done = alerted[subscriber.telegram_id]
                if t.address not in done and token_matches(subscriber.filters, token, event.called_at, facts):
                    done.append(t.address)
    return alerted


def _num(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def count(alerts: Mapping[int, list[str]]) -> dict[int, int]:
    return {user: len(tokens) for user, tokens in alerts.items()}
