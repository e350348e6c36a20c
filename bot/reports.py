"""The reports, worded and sent: the daily report (20:00 UTC, each subscriber's alerts of the last
24 hours), the best of the day (21:00 UTC) and the channels of the week (Mondays 09:00 UTC).

Each report is a chart (services/charts.py) sent as a photo with the text as its caption, or,
when the text is longer than a caption may be, with the title as caption and the text in a
message after it. Every report is claimed in PostgreSQL before it is sent (services/reports.py),
so it goes once per subscriber and day whoever runs the job and however often. A subscriber
with no alerts in the period gets no daily report: a report of nothing is noise.

Reports go in the sender's last lane, after alerts, and at most `in_flight` at a time are
handed to it, so a run for many subscribers holds only that many pictures in memory. Charts
are drawn in a thread of their own, so the event loop keeps serving alerts meanwhile.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

from bot.texts import pick_language, text
from domain.messages import Lane, OutgoingMessage
from domain.reports import (
    GAIN_CAP,
    SCHEDULES,
    AlertResult,
    CallResult,
    ChannelResult,
    ReportKind,
    ReportSchedule,
    TokenResult,
    best_channels,
    best_tokens,
    by_peak,
    channel_results,
    report_day,
    summarize,
)
from services.charts import MAX_ROWS, Chart, ChartPainter, ChartRow
from services.reports import KEEP_DAYS, DailyReport, Outcome, Recipient, ReportStore
from services.sender import MessageSender, caption_fits
from services.sender import Outcome as SendOutcome
from services.subscribers import PG_FAILURES, SubscriberStore

logger = logging.getLogger("alertbot.reports")

IN_FLIGHT = 200  # reports handed to the sender and not yet answered
CLAIM_BATCH = 100  # subscribers claimed per round trip
DAILY_LINES = 30  # alerts listed in a daily report's text; the rest are counted
BEST_TOKENS = 10
BEST_CHANNELS = 5
BEST_MIN_CALLS = 2  # a channel's calls in the day before it may be among the best
WEEKLY_CHANNELS = 10
WEEKLY_MIN_CALLS = 5  # a channel with three calls must not look like an oracle
RETRY_SECONDS = 60.0  # after PostgreSQL failed, while the report is still due


def utc_now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------- wording


@dataclass(frozen=True)
class ReportContent:
    """What a report sends: a chart with `caption`, then `more` as a message of its own (the
    part of the text too long for a caption), if any."""

    caption: str
    chart: Chart
    more: str | None = None


def fmt_multiple(value: float | None, language: str) -> str:
    if value is None:
        return text("report_na", language)
    if value < 1:
        return f"{value:.2f}x"
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def fmt_share(value: float | None, language: str) -> str:
    return text("report_na", language) if value is None else f"{value * 100:.0f}%"


def token_name(symbol: str | None, address: str) -> str:
    """The symbol, or the address shortened: plain text (escape it for HTML)."""
    if symbol and symbol.strip():
        return symbol.strip()[:24]
    return f"{address[:4]}…{address[-4:]}" if len(address) > 10 else address


def _period(key: str, slot: datetime, language: str) -> str:
    return text(key, language, date=slot.strftime("%Y-%m-%d"), time=slot.strftime("%H:%M"))


def _split(head: str, lines: Sequence[str]) -> tuple[str, str | None]:
    """The caption and the message after it: all in the caption when it fits there."""
    whole = "\n".join([head, "", *lines]) if lines else head
    if caption_fits(whole):
        return whole, None
    return head, "\n".join(lines)


def compose_daily(report: DailyReport, slot: datetime, language: str) -> ReportContent:
    alerts = report.alerts
    ranked = by_peak(alerts)
    summary = summarize(alerts)
    head = [_period_title("report_daily_title", "report_period_day", slot, language)]
    head.append(text("report_daily_summary", language, alerts=summary.alerts, won=summary.won))
    if summary.best is not None:
        best = summary.best
        head.append(
            text(
                "report_daily_best",
                language,
                symbol=html.escape(token_name(best.symbol, best.token_address)),
                peak=fmt_multiple(best.peak, language),
            )
        )
    lines = [_alert_line(n, alert, language) for n, alert in enumerate(ranked[:DAILY_LINES], 1)]
    if len(ranked) > DAILY_LINES:
        lines.append(text("report_more", language, count=len(ranked) - DAILY_LINES))
    caption, more = _split("\n".join(head), lines)
    rows = tuple(
        ChartRow(
            token_name(a.symbol, a.token_address),
            a.peak,
            a.current,
            fmt_multiple(a.peak, language) if a.peak is not None else "",
        )
        for a in ranked[:MAX_ROWS]
    )
    chart = Chart(
        text("report_daily_chart", language, date=slot.strftime("%Y-%m-%d")),
        rows,
        "multiple",
        (text("report_chart_peak", language), text("report_chart_now", language)),
    )
    return ReportContent(caption, chart, more)


def _period_title(title_key: str, period_key: str, slot: datetime, language: str) -> str:
    return text(title_key, language, period=_period(period_key, slot, language))


def _alert_line(n: int, alert: AlertResult, language: str) -> str:
    return text(
        "report_daily_line",
        language,
        n=n,
        symbol=html.escape(token_name(alert.symbol, alert.token_address)),
        peak=fmt_multiple(alert.peak, language),
        now=fmt_multiple(alert.current, language),
    )


def compose_best(calls: Sequence[CallResult], slot: datetime, language: str) -> ReportContent | None:
    """The period's best tokens and channels; None when no call of it was measured."""
    tokens = best_tokens(calls, BEST_TOKENS)
    if not tokens:
        return None
    channels = best_channels(channel_results(calls), min_calls=BEST_MIN_CALLS, count=BEST_CHANNELS)
    head = _period_title("report_best_title", "report_period_day", slot, language)
    lines = [text("report_best_tokens", language)]
    lines += [_token_line(n, token, language) for n, token in enumerate(tokens, 1)]
    if channels:
        lines += ["", text("report_best_channels", language, min=BEST_MIN_CALLS)]
        lines += [
            text(
                "report_best_channel_line",
                language,
                n=n,
                name=html.escape(_channel_name(channel)),
                won=channel.won,
                measured=channel.measured,
                best=fmt_multiple(channel.best_peak, language),
            )
            for n, channel in enumerate(channels, 1)
        ]
    caption, more = _split(head, lines)
    rows = tuple(
        ChartRow(token_name(t.symbol, t.token_address), t.peak, t.current, fmt_multiple(t.peak, language))
        for t in tokens[:MAX_ROWS]
    )
    chart = Chart(
        text("report_best_chart", language, date=slot.strftime("%Y-%m-%d")),
        rows,
        "multiple",
        (text("report_chart_peak", language), text("report_chart_now", language)),
    )
    return ReportContent(caption, chart, more)


def _token_line(n: int, token: TokenResult, language: str) -> str:
    return text(
        "report_best_token_line",
        language,
        n=n,
        symbol=html.escape(token_name(token.symbol, token.token_address)),
        peak=fmt_multiple(token.peak, language),
        now=fmt_multiple(token.current, language),
        channels=token.channels,
    )


def _channel_name(channel: ChannelResult) -> str:
    return (channel.name or channel.channel_id)[:32]


def compose_weekly(calls: Sequence[CallResult], slot: datetime, language: str) -> ReportContent | None:
    """The channels of the week by win rate; None when no channel had enough measured calls."""
    channels = best_channels(channel_results(calls), min_calls=WEEKLY_MIN_CALLS, count=WEEKLY_CHANNELS)
    if not channels:
        return None
    head = _period_title("report_weekly_title", "report_period_week", slot, language)
    lines = [
        text(
            "report_weekly_line",
            language,
            n=n,
            name=html.escape(_channel_name(channel)),
            rate=fmt_share(channel.win_rate, language),
            won=channel.won,
            measured=channel.measured,
            mean=fmt_multiple(channel.mean_peak, language),
            median=fmt_multiple(channel.median_peak, language),
        )
        for n, channel in enumerate(channels, 1)
    ]
    lines += ["", text("report_weekly_note", language, min=WEEKLY_MIN_CALLS, cap=fmt_multiple(GAIN_CAP, language))]
    caption, more = _split(head, lines)
    rows = tuple(
        ChartRow(
            _channel_name(c),
            None if c.win_rate is None else c.win_rate * 100,
            note=f"{fmt_share(c.win_rate, language)} · {c.measured}",
        )
        for c in channels[:MAX_ROWS]
    )
    chart = Chart(text("report_weekly_chart", language, date=slot.strftime("%Y-%m-%d")), rows, "percent")
    return ReportContent(caption, chart, more)


# ---------------------------------------------------------------------------------- sending


@dataclass
class RunSummary:
    """What one run of a report did (for logs and tests)."""

    kind: ReportKind
    slot: datetime
    candidates: int = 0  # subscribers without a claim when the run began
    claimed: int = 0  # claimed by this run, so sent by it
    sent: int = 0
    gone: int = 0
    failed: int = 0

    def count(self, status: str) -> None:
        if status == "sent":
            self.sent += 1
        elif status == "gone":
            self.gone += 1
        else:
            self.failed += 1


@dataclass
class _InFlight:
    """Reports handed to the sender and not yet answered, and their outcomes to record."""

    limit: int
    outcomes: list[Outcome] = field(default_factory=list)
    pending: int = 0
    slots: asyncio.Semaphore = field(init=False)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.limit)
        self.idle.set()

    async def enter(self) -> None:
        await self.slots.acquire()
        self.pending += 1
        self.idle.clear()

    def leave(self, outcome: Outcome | None) -> None:
        if outcome is not None:
            self.outcomes.append(outcome)
        self.pending -= 1
        self.slots.release()
        if not self.pending:
            self.idle.set()

    def take(self) -> list[Outcome]:
        taken, self.outcomes = self.outcomes, []
        return taken


class ReportJobs:
    """Runs the reports: on their cron slots (`schedule`), and on start for a slot missed while
    the bot was down (`catch_up`). `clock` says what time it is (tests move it)."""

    def __init__(
        self,
        reports: ReportStore,
        store: SubscriberStore,
        sender: MessageSender,
        *,
        admin_ids: Iterable[int] = (),
        clock: Callable[[], datetime] = utc_now,
        painter: ChartPainter | None = None,
        in_flight: int = IN_FLIGHT,
        claim_batch: int = CLAIM_BATCH,
        schedules: dict[ReportKind, ReportSchedule] | None = None,
    ) -> None:
        self.reports = reports
        self.store = store
        self.sender = sender
        self.admin_ids = frozenset(admin_ids)
        self.clock = clock
        self.painter = painter or ChartPainter()
        self.in_flight = in_flight
        self.claim_batch = claim_batch
        self.schedules = dict(schedules or SCHEDULES)
        # One thread draws every chart: a painter is for one thread at a time.
        self._charts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="report-charts")
        self._runs: set[asyncio.Task[object]] = set()
        self._closing = False

    def schedule(self, scheduler: AsyncIOScheduler) -> None:
        """A cron job per report, in UTC. A run the loop could not start on time still starts
        within the report's grace (misfire_grace_time), and missed runs start once (coalesce)."""
        for kind, rule in self.schedules.items():
            trigger = CronTrigger(
                day_of_week="*" if rule.weekday is None else str(rule.weekday),
                hour=rule.hour,
                minute=rule.minute,
                timezone=UTC,
            )
            scheduler.add_job(
                self.run_due,
                trigger,
                args=[kind],
                id=f"report-{kind.value}",
                replace_existing=True,
                misfire_grace_time=int(rule.grace.total_seconds()),
                coalesce=True,
                max_instances=1,
            )

    async def close(self) -> None:
        """Stop the runs in progress (their claimed, unsent reports stay claimed) and the chart thread."""
        self._closing = True
        for task in list(self._runs):
            task.cancel()
        for task in list(self._runs):
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled, or failed and logged already
                pass
        self._charts.shutdown(wait=True, cancel_futures=True)

    async def catch_up(self) -> list[RunSummary]:
        """Every report whose slot passed within its grace: the runs the bot missed while it was
        down (reports already sent are not sent again)."""
        done = []
        for kind in self.schedules:
            summary = await self.run_due(kind)
            if summary is not None:
                done.append(summary)
        return done

    async def run_due(self, kind: ReportKind) -> RunSummary | None:
        """The report of the latest slot of `kind`, while it is still due; a PostgreSQL failure
        is retried until then."""
        task = asyncio.current_task()
        if task is not None:
            self._runs.add(task)
        try:
            while True:
                slot = self.schedules[kind].due(self.clock())
                if slot is None:
                    return None
                try:
                    return await self.run(kind, slot)
                except PG_FAILURES as exc:
                    logger.warning("%s report of %s: PostgreSQL failed (%r); retrying", kind, slot, exc)
                    await asyncio.sleep(RETRY_SECONDS)
        except asyncio.CancelledError:
            if not self._closing:
                raise
            # Stopped by `close`: an ordinary end for the scheduler, not a failed job.
            logger.info("%s report stopped with the bot", kind)
            return None
        finally:
            if task is not None:
                self._runs.discard(task)

    async def run(self, kind: ReportKind, slot: datetime) -> RunSummary:
        """Send the report of `slot` to everyone it is for who has not had it yet."""
        rule = self.schedules[kind]
        start, end = rule.window(slot)
        day = report_day(slot)
        now = self.clock()
        summary = RunSummary(kind, slot)
        await self.store.flush_pending()  # report switches Redis has and PostgreSQL not yet
        if kind is ReportKind.DAILY:
            daily = await self.reports.daily(start, end, now, day)
            items: list[tuple[Recipient, Callable[[str], ReportContent | None]]] = [
                (report.recipient, _daily_composer(report, slot)) for report in daily
            ]
            await self._prune(now)
        else:
            if kind is ReportKind.BEST:
                calls, compose = await self.reports.calls(start, end, now), compose_best
            else:
                calls, compose = await self.reports.week_calls(start, end), compose_weekly
            per_language: dict[str, ReportContent | None] = {}

            def shared(language: str) -> ReportContent | None:
                if language not in per_language:
                    per_language[language] = compose(calls, slot, language)
                return per_language[language]

            if shared("en") is None:  # nothing measured in the period: nothing to report
                logger.info("%s report of %s: no measured calls, nothing sent", kind, slot)
                return summary
            recipients = await self.reports.recipients(kind, day, now, self.admin_ids)
            items = [(recipient, shared) for recipient in recipients]
        summary.candidates = len(items)
        charts: dict[tuple[object, ...], bytes] = {}  # the shared reports' charts, drawn once
        flight = _InFlight(self.in_flight)
        for first in range(0, len(items), self.claim_batch):
            batch = items[first : first + self.claim_batch]
            claimed = await self.reports.claim(kind, day, [recipient.user_id for recipient, _ in batch])
            summary.claimed += len(claimed)
            for recipient, composer in batch:
                if recipient.user_id in claimed:
                    await flight.enter()
                    await self._send(kind, recipient, composer, charts, flight, summary)
            await self.reports.finish(kind, day, flight.take())
        await flight.idle.wait()
        await self.reports.finish(kind, day, flight.take())
        logger.info(
            "%s report of %s: %d claimed, %d sent, %d gone, %d failed (%d had it already)",
            kind,
            slot.isoformat(),
            summary.claimed,
            summary.sent,
            summary.gone,
            summary.failed,
            summary.candidates - summary.claimed,
        )
        return summary

    async def _send(
        self,
        kind: ReportKind,
        recipient: Recipient,
        composer: Callable[[str], ReportContent | None],
        charts: dict[tuple[object, ...], bytes],
        flight: _InFlight,
        summary: RunSummary,
    ) -> None:
        """Hand one claimed report to the sender; `flight` hears when Telegram has answered."""
        language = pick_language(recipient.language)
        try:
            content = composer(language)
            if content is None:
                flight.leave(Outcome(recipient.user_id, "failed", reason="nothing to report"))
                return
            key = (content.chart.key(), content.chart.rows)
            png = charts.get(key) if kind is not ReportKind.DAILY else None
            if png is None:
                png = await asyncio.get_running_loop().run_in_executor(self._charts, self.painter.render, content.chart)
                if kind is not ReportKind.DAILY:
                    charts[key] = png
        except Exception as exc:  # noqa: BLE001 - one subscriber's report must not stop the others'
            logger.exception("%s report for %s could not be made", kind, recipient.telegram_id)
            summary.count("failed")
            flight.leave(Outcome(recipient.user_id, "failed", reason=f"{type(exc).__name__}: {exc}"))
            return

        def done(outcome: SendOutcome) -> None:
            summary.count(outcome.status)
            flight.leave(Outcome(recipient.user_id, outcome.status, outcome.message_id, outcome.reason))

        chat = recipient.telegram_id
        name = f"report_{kind.value}"
        photo = OutgoingMessage(chat, content.caption, lane=Lane.REPORT, photo_bytes=png, kind=name)
        if content.more is None:
            self.sender.submit(photo, on_done=done)
            return
        # Two messages in the same lane of one chat go in order: the chart, then the text.
        self.sender.submit(photo)
        self.sender.submit(OutgoingMessage(chat, content.more, lane=Lane.REPORT, kind=name), on_done=done)

    async def _prune(self, now: datetime) -> None:
        try:
            await self.reports.prune(now - timedelta(days=KEEP_DAYS))
        except PG_FAILURES as exc:
            logger.warning("old report claims not pruned (%r)", exc)


def _daily_composer(report: DailyReport, slot: datetime) -> Callable[[str], ReportContent | None]:
    def compose(language: str) -> ReportContent | None:
        return compose_daily(report, slot, language)

    return compose
