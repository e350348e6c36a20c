"""Follow-ups to the subscriber: each one the tracker won, in their language, as a reply to their
alert, through the sender in the alert lane; the tracker hears which ones Telegram took.
`FollowUps` is the part the runtime starts and stops: the tracker and its price sources."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bot.texts import pick_language, text
from domain.alert_text import SYMBOL_MAX, format_usd, sanitize
from domain.matching import SubscriberIndex
from domain.messages import OutgoingMessage, alert_lane
from domain.multipliers import FollowUp
from services.multiplier import MultiplierTracker
from services.price_sources import DexScreenerPoller, TradeSubscriptions
from services.sender import MessageSender, Outcome

logger = logging.getLogger("alertbot.followups")


def followup_text(followup: FollowUp, language: str) -> str:
    """The follow-up in Telegram HTML; the token is named as the alert named it."""
    unknown = text("followup_unknown", language)
    return text(
        "followup",
        language,
        multiple=followup.multiple,
        symbol=sanitize(followup.symbol, SYMBOL_MAX) or unknown,
        base=format_usd(followup.base_market_cap) or unknown,
        now=format_usd(followup.market_cap) or unknown,
        peak=format_usd(max(followup.peak_market_cap, followup.market_cap)) or unknown,
        address=followup.token,
    )


class FollowUpNotifier:
    """The tracker's `notify`: renders and queues each follow-up, and reports its outcome back."""

    def __init__(self, sender: MessageSender, index: SubscriberIndex, tracker: MultiplierTracker) -> None:
        self.sender = sender
        self.index = index
        self.tracker = tracker

    def __call__(self, followup: FollowUp) -> None:
        subscriber = self.index.get(followup.chat_id)
        language = pick_language(subscriber.language if subscriber else None)
        message = OutgoingMessage(
            chat_id=followup.chat_id,
            html=followup_text(followup, language),
            lane=alert_lane(subscriber, datetime.now(UTC)),
            kind="followup",
            reply_to_message_id=followup.reply_to,
        )

        async def done(outcome: Outcome) -> None:
            if outcome.status != "sent":
                logger.info(
                    "%dx follow-up of %s to %s not delivered: %s",
                    followup.multiple,
                    followup.token,
                    followup.chat_id,
                    outcome.reason,
                )
            self.tracker.sent(followup, outcome.status == "sent")

        self.sender.submit(message, on_done=done)


class FollowUps:
    """The tracker, DexScreener polling for tokens no other source prices (None: off), and
    PumpPortal trade subscriptions for the followed tokens (None: no PumpPortal key)."""

    def __init__(
        self,
        tracker: MultiplierTracker,
        poller: DexScreenerPoller | None = None,
        trades: TradeSubscriptions | None = None,
    ) -> None:
        self.tracker = tracker
        self.poller = poller
        self.trades = trades
        if trades is not None:
            tracker.after_upkeep.append(trades.refresh)

    async def start(self) -> None:
        await self.tracker.start()
        if self.poller is not None:
            await self.poller.start()

    async def stop(self) -> None:
        if self.poller is not None:
            await self.poller.stop()
        await self.tracker.stop()

    def numbers(self) -> dict[str, float]:
        out = self.tracker.numbers()
        if self.poller is not None:
            out.update({f"dexscreener_{name}": value for name, value in self.poller.stats.numbers().items()})
        return out
