"""Prometheus metrics: the components' own numbers, read at scrape time, typed as Prometheus means.

Components keep plain counters and timing histograms (no Prometheus import in managers), and
`ComponentCollector` reads them only when Prometheus scrapes, so the hot paths pay nothing for
metrics. A number that only grows while the process runs is exported as a counter
(`alertbot_<component>_<name>_total`); a level, which also goes down (a queue's depth, the
circuit's state), as a gauge (`alertbot_<component>_<name>`). Which numbers are levels is said
once, in `LEVELS`; `LEFT_OUT` names the sliding-window percentiles the histograms replace.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger("alertbot.metrics")

# What every component (or its stats record) offers /metrics: its numbers by name, read at scrape time.
Numbers = Mapping[str, object]
NumbersProvider = Callable[[], Numbers]
# Numbers per label value (one feed, one cache...), for components that come in several.
LabelledNumbers = Callable[[], Mapping[str, Numbers]]
# A counter with labels: its value per tuple of label values.
LabelledCounts = Callable[[], Mapping[tuple[str, ...], int | float]]

_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_]")

# Per component, the numbers that are levels; every other number it reports is a counter.
LEVELS: dict[str, frozenset[str]] = {
    "sender": frozenset({"pending", "in_flight", "paused_for", "telegram_reachable", "unreachable_for"}),
    "queue": frozenset({"max_depth"}),
    "cache": frozenset({"size", "hit_rate"}),
    "followups": frozenset({"tokens", "entries", "claims_waiting"}),
}
# Per component, numbers not exported: percentiles over a sliding window, which neither only
# grow nor add up across scrapes; the timing histograms below give them properly.
LEFT_OUT: dict[str, frozenset[str]] = {
    "sender": frozenset({"latency_p50", "latency_p95", "latency_max"}),
    "pipeline": frozenset({"latency_p50_ms", "latency_p99_ms"}),
}

# Seconds from the feed frame's arrival to Telegram's answer to the alert it caused.
FRAME_TO_SEND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Seconds Telegram takes to answer one send request.
ANSWER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)


def metric_name(*parts: str) -> str:
    return "_".join(_NAME_SAFE.sub("_", part) for part in parts if part)


class TimingHistogram:
    """Observations counted into fixed buckets (upper bounds, in seconds), with their sum: what a
    Prometheus histogram needs, kept by the component itself."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, observations at or below it) per bucket, +Inf last, as the text format wants."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
        return out


@dataclass(frozen=True)
class _Source:
    component: str
    label: str | None  # the label its numbers are told apart by (feed, cache), if any
    read: LabelledNumbers
    levels: frozenset[str] | None  # None: every number is a level
    left_out: frozenset[str]


@dataclass(frozen=True)
class _Counts:
    name: str
    documentation: str
    labels: tuple[str, ...]
    read: LabelledCounts


@dataclass(frozen=True)
class _Histogram:
    name: str
    documentation: str
    histogram: TimingHistogram


class ComponentCollector(Collector):
    """Exports what components report, read at scrape time (see the module docstring)."""

    def __init__(self) -> None:
        self._sources: list[_Source] = []
        self._counts: list[_Counts] = []
        self._histograms: list[_Histogram] = []

    def add(self, component: str, provider: NumbersProvider) -> None:
        """A component's numbers: counters, except its `LEVELS`."""
        self._add(component, None, lambda: {"": provider()}, LEVELS.get(component, frozenset()))

    def add_levels(self, component: str, provider: NumbersProvider) -> None:
        """Numbers that are all levels (depths, states, sizes)."""
        self._add(component, None, lambda: {"": provider()}, None)

    def add_each(self, component: str, label: str, provider: LabelledNumbers, *, all_levels: bool = False) -> None:
        """Numbers of several instances of a component, told apart by `label` (one feed, one
        cache): counters except the component's `LEVELS`, or with `all_levels` levels only."""
        self._add(component, label, provider, None if all_levels else LEVELS.get(component, frozenset()))

    def add_counter(self, name: str, documentation: str, labels: Sequence[str], read: LabelledCounts) -> None:
        """A counter with labels, read from the component's own counts (payments by rail and outcome)."""
        self._counts.append(_Counts(name, documentation, tuple(labels), read))

    def add_histogram(self, name: str, documentation: str, histogram: TimingHistogram) -> None:
        self._histograms.append(_Histogram(name, documentation, histogram))

    def _add(self, component: str, label: str | None, read: LabelledNumbers, levels: frozenset[str] | None) -> None:
        safe = _NAME_SAFE.sub("_", component)
        self._sources.append(_Source(safe, label, read, levels, LEFT_OUT.get(safe, frozenset())))

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for source in self._sources:
            try:
                instances = source.read()
            except Exception:  # noqa: BLE001 - one broken component must not take /metrics down
                logger.exception("metrics: reading %s failed", source.component)
                continue
            for label_value, numbers in instances.items():
                for key, value in numbers.items():
                    if key in source.left_out or value is None:
                        continue
                    if isinstance(value, bool):
                        value = int(value)
                    if not isinstance(value, (int, float)):
                        continue
                    level = source.levels is None or key in source.levels
                    name = metric_name("alertbot", source.component, key)
                    family = families.get(name)
                    if family is None:
                        labels = [source.label] if source.label else None
                        what = f"{source.component} {key}"
                        family = (
                            GaugeMetricFamily(name, what, labels=labels)
                            if level
                            else CounterMetricFamily(name, what, labels=labels)
                        )
                        families[name] = family
                    family.add_metric([label_value] if source.label else [], float(value))
        yield from families.values()
        for counts in self._counts:
            counter = CounterMetricFamily(counts.name, counts.documentation, labels=counts.labels)
            try:
                values = counts.read()
            except Exception:  # noqa: BLE001
                logger.exception("metrics: reading %s failed", counts.name)
                continue
            for label_values, value in sorted(values.items()):
                counter.add_metric(list(label_values), float(value))
            yield counter
        for entry in self._histograms:
            histogram = entry.histogram
            yield HistogramMetricFamily(
                entry.name, entry.documentation, buckets=histogram.cumulative(), sum_value=histogram.sum
            )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.components = ComponentCollector()
        self.registry.register(self.components)
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds (on Linux).
        ProcessCollector(registry=self.registry)
        self.updates = Counter(
            "alertbot_telegram_updates", "Telegram updates handled, by kind", ["kind"], registry=self.registry
        )
        self.handler_errors = Counter(
            "alertbot_handler_errors", "Handler exceptions caught by the error router", registry=self.registry
        )
