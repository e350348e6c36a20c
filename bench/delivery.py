"""Delivery engine (MessageSender) against the test Bot API, which enforces Telegram's limits.

    python -m bench.delivery [--alerts N] [--chats N] [--scenario all|steady|burst429|paid] [--quick]

The server (standins/telegram) allows 30 messages/s per bot, 1/s per private chat,
20/min per group and 1,000/s for sends with allow_paid_broadcast, and answers 429 with
retry_after beyond them. It runs in a process of its own (bench/bot_api_process.py), so the
sender has a core to itself and every send is a real HTTP request. Scenarios, one table row each:

* steady    --alerts alerts to --chats private chats (alert i to chat 1,000,000 + i % chats),
            all submitted at once; default limits, no digests. Target: >= 29 msg/s sustained,
            no 429, no chat sent two messages within a second. 10,000 take ~5.5 minutes.
* burst429  --burst-alerts alerts to as many chats; once ~100 are accepted the server answers
            429 "retry after 5" to every request for 5 s. Target: nothing lost, one pause of ~5 s.
* paid      --paid-alerts alerts to distinct chats, MessageSender(paid_broadcast=True,
            workers=--workers); target >= 900 msg/s sustained, no 429.

Columns (times are the server's clock of acceptance):

* seconds           first to last accepted send
* sustained msg/s   (sent - 1) / seconds
* min/max 1-s window  sends per whole second of the run, counting only the seconds after the
                    first 5 (pacing should be even; the last, partial second is left out)
* longest pause s   the largest gap between two consecutive accepted sends
* 429s (server)     429 answers the server gave; 429s (sender): those the sender handled
* retries (sender)  requests the sender had to make again (after a 429 or a transient error)
* min same-chat gap s  shortest time between two sends to one chat (must be >= 1 s)
* lost              submitted - accepted

Progress goes to stderr every 1,000 accepted sends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.bot_api_process import Accepted, BotApiProcess, Burst, Progress
from bench.table import print_markdown
from services.sender import MessageSender, OutgoingMessage
from standins.telegram import RateLimits

FIRST_CHAT = 1_000_000
WARMUP_SECONDS = 5  # 1-s windows before this are left out of min/max
BURST_AFTER = 100  # accepted sends before the forced 429s begin
BURST_RETRY_AFTER = 5
BURST_DURATION = 5.0
PROGRESS_EVERY = 1_000


@dataclass
class Row:
    scenario: str
    alerts: int
    chats: int
    seconds: float | None
    rate: float | None
    min_window: int | None
    max_window: int | None
    longest_pause: float | None
    rejected_429: int
    sender_429: int
    retries: int
    min_chat_gap: float | None
    lost: int

    def cells(self) -> list[str]:
        def fmt(value: float | int | None, spec: str) -> str:
            return "-" if value is None else format(value, spec)

        return [
            self.scenario,
            f"{self.alerts:,}",
            f"{self.chats:,}",
            fmt(self.seconds, ".1f"),
            fmt(self.rate, ",.1f"),
            fmt(self.min_window, ","),
            fmt(self.max_window, ","),
            fmt(self.longest_pause, ".3f"),
            f"{self.rejected_429:,}",
            f"{self.sender_429:,}",
            f"{self.retries:,}",
            fmt(self.min_chat_gap, ".3f"),
            f"{self.lost:,}",
        ]


def analyse(
    scenario: str, alerts: int, chats: int, sent: list[Accepted], rejected_429: int, sender_stats: dict[str, Any]
) -> Row:
    times = sorted(record.monotonic for record in sent)
    seconds = rate = longest_pause = None
    min_window = max_window = None
    if len(times) > 1:
        seconds = times[-1] - times[0]
        rate = (len(times) - 1) / seconds if seconds > 0 else None
        longest_pause = max(b - a for a, b in zip(times, times[1:]))
        # Whole seconds of server time since the first send, from WARMUP_SECONDS to the last
        # second that ended before the last send.
        per_second = Counter(int(t - times[0]) for t in times)
        whole = range(WARMUP_SECONDS, int(seconds))
        if whole:
            counts = [per_second.get(k, 0) for k in whole]
            min_window, max_window = min(counts), max(counts)
    last_by_chat: dict[int, float] = {}
    min_chat_gap: float | None = None
    for record in sorted(sent, key=lambda r: r.monotonic):
        previous = last_by_chat.get(record.chat_id)
        if previous is not None:
            gap = record.monotonic - previous
            min_chat_gap = gap if min_chat_gap is None else min(min_chat_gap, gap)
        last_by_chat[record.chat_id] = record.monotonic
    return Row(
        scenario,
        alerts,
        chats,
        seconds,
        rate,
        min_window,
        max_window,
        longest_pause,
        rejected_429,
        int(sender_stats["rate_limited"]),
        int(sender_stats["retried"]),
        min_chat_gap,
        alerts - len(sent),
    )


async def run(scenario: str, alerts: int, chats: int, *, workers: int | None = None) -> Row:
    """Submit `alerts` alerts (alert i to chat FIRST_CHAT + i % chats) and drain the sender.

    The server runs in a process of its own (bench/bot_api_process.py): sharing one event loop
    and core with the sender, it capped the paid scenario well below its 1,000/s.
    """
    paid = scenario == "paid"
    print(f"{scenario}: {alerts:,} alerts to {chats:,} chats...", file=sys.stderr)
    burst = Burst(BURST_AFTER, BURST_RETRY_AFTER, BURST_DURATION) if scenario == "burst429" else None
    async with BotApiProcess(
        limits=RateLimits(paid_per_second=1000), burst=burst, progress=Progress(scenario, alerts, PROGRESS_EVERY)
    ) as api:
        bot = api.create_bot()
        options: dict[str, object] = {"paid_broadcast": paid}
        if workers is not None:
            options["workers"] = workers
        try:
            async with MessageSender(bot, digest=None, **options) as sender:  # type: ignore[arg-type]  # paid_broadcast: bool, workers: int
                for i in range(alerts):
                    chat = FIRST_CHAT + i % chats
                    sender.submit(OutgoingMessage(chat, f"<b>Alert {i}</b> for chat <code>{chat}</code>", kind="alert"))
            # Leaving the block drained the queue.
            stats = sender.stats()
        finally:
            await bot.session.close()
        result = await api.finish()
    return analyse(scenario, alerts, chats, result.sent, result.stats["rejected_429"], stats)


def print_table(rows: list[Row], out: Callable[[str], None] = print) -> None:
    header = [
        "scenario",
        "alerts",
        "chats",
        "seconds",
        "sustained msg/s",
        "min 1-s window",
        "max 1-s window",
        "longest pause s",
        "429s (server)",
        "429s (sender)",
        "retries (sender)",
        "min same-chat gap s",
        "lost",
    ]
    print_markdown(header, [row.cells() for row in rows], out)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=None, help="steady: alerts (default 10,000; --quick 600)")
    parser.add_argument("--chats", type=int, default=None, help="steady: chats (default 2,000; --quick 200)")
    parser.add_argument(
        "--burst-alerts",
        type=int,
        default=None,
        help="burst429: alerts, each to its own chat (default 600; --quick 300)",
    )
    parser.add_argument(
        "--paid-alerts",
        type=int,
        default=None,
        help="paid: alerts, each to its own chat (default 10,000; --quick 3,000)",
    )
    parser.add_argument("--workers", type=int, default=64, help="paid: sends in flight at once")
    parser.add_argument("--scenario", default="all", choices=["all", "steady", "burst429", "paid"])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a check in about a minute")
    args = parser.parse_args(argv)

    def pick(value: int | None, full: int, quick: int) -> int:
        return value if value is not None else (quick if args.quick else full)

    alerts = pick(args.alerts, 10_000, 600)
    chats = pick(args.chats, 2_000, 200)
    burst_alerts = pick(args.burst_alerts, 600, 300)
    paid_alerts = pick(args.paid_alerts, 10_000, 3_000)
    if min(alerts, chats, burst_alerts, paid_alerts, args.workers) < 1:
        parser.error("counts must be positive")

    rows: list[Row] = []
    if args.scenario in ("all", "steady"):
        rows.append(await run("steady", alerts, chats))
    if args.scenario in ("all", "burst429"):
        rows.append(await run("burst429", burst_alerts, burst_alerts))
    if args.scenario in ("all", "paid"):
        rows.append(await run("paid", paid_alerts, paid_alerts, workers=args.workers))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
