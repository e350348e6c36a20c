"""Delivery throughput against the test Bot API, which enforces Telegram's limits.

    python -m bench.delivery [--alerts 10000] [--chats 2000] [--scenario all|steady|burst429|paid]

Scenarios (one table row each):

* steady    N alerts to M private chats submitted at once (30/s overall, 1/s per chat);
* burst429  the server answers 429 retry_after 5 to everything for 5 s once 100 are sent;
* paid      PAID_BROADCAST: alerts to distinct chats against a server allowing 1,000/s.

Columns: sustained msg/s = (sent - 1) / (last - first accepted send, server clock); 429s as the
server counted them; min same-chat gap (must be >= 1 s); lost = submitted - accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass

from services.sender import AlertSender
from bench.table import print_markdown
from tests.doubles.telegram_api import FakeTelegramServer, RateLimits


@dataclass
class Row:
    scenario: str
    alerts: int
    chats: int
    sent: list[tuple[int, float]]  # (chat, server monotonic time)
    rejected_429: int
    retries: int

    def cells(self) -> list[str]:
        times = sorted(t for _, t in self.sent)
        seconds = times[-1] - times[0] if len(times) > 1 else 0.0
        rate = (len(times) - 1) / seconds if seconds else float("nan")
        last_by_chat: dict[int, float] = {}
        min_gap = float("inf")
        for chat, at in sorted(self.sent, key=lambda s: s[1]):
            if chat in last_by_chat:
                min_gap = min(min_gap, at - last_by_chat[chat])
            last_by_chat[chat] = at
        gap = f"{min_gap:.3f}" if min_gap != float("inf") else "-"
        return [self.scenario, f"{self.alerts:,}", f"{self.chats:,}", f"{seconds:.1f}", f"{rate:,.1f}",
                str(self.rejected_429), str(self.retries), gap, str(self.alerts - len(self.sent))]


async def run(scenario: str, alerts: int, chats: int) -> Row:
    limits = RateLimits(paid_per_second=1000)
    async with FakeTelegramServer(limits=limits) as server:
        bot = server.create_bot()
        paid = scenario == "paid"
        sender = AlertSender(bot, paid_broadcast=paid, workers=64 if paid else 8)
        await sender.start()
        for i in range(alerts):
            sender.submit(1_000_000 + i % chats, f"<b>alert</b> {i}")
        if scenario == "burst429":
            await server.wait_for(lambda: len(server.sent) >= 100, timeout=60)
            server.force_retry_after(5, duration=5)
        await sender.stop(drain=True)
        await bot.session.close()
        return Row(scenario, alerts, chats, [(r.chat_id, r.monotonic) for r in server.sent],
                   server.stats.rejected_429, sender.stats()["retried"])


def print_table(rows: list[Row]) -> None:
    header = ["scenario", "alerts", "chats", "seconds", "sustained msg/s", "429s (server)", "retries",
              "min same-chat gap s", "lost"]
    print_markdown(header, [row.cells() for row in rows])


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--chats", type=int, default=2_000)
    parser.add_argument("--burst-alerts", type=int, default=600)
    parser.add_argument("--scenario", default="all", choices=["all", "steady", "burst429", "paid"])
    args = parser.parse_args(argv)
    rows: list[Row] = []
    if args.scenario in ("all", "steady"):
        rows.append(await run("steady", args.alerts, args.chats))
    if args.scenario in ("all", "burst429"):
        rows.append(await run("burst429", args.burst_alerts, args.burst_alerts))
    if args.scenario in ("all", "paid"):
        rows.append(await run("paid", args.alerts, args.alerts))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
