"""Prometheus metrics: counters the code increments, plus numbers read from components at scrape time."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# What every component (or its stats record) offers /metrics: its numbers by name, read at scrape time.
NumbersProvider = Callable[[], Mapping[str, object]]
_NAME_SAFE = re.compile(r"[^a-zA-Z0-9_]")


class ComponentCollector(Collector):
    """Exports each numeric value a component reports as `alertbot_<component>_<name>`.

    Components keep their own plain counters (no Prometheus import in managers), and this reads
    them only when Prometheus scrapes, so the hot paths pay nothing for metrics.
    """

    def __init__(self) -> None:
        self._providers: dict[str, NumbersProvider] = {}

    def add(self, component: str, provider: NumbersProvider) -> None:
        self._providers[_NAME_SAFE.sub("_", component)] = provider

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for component, provider in self._providers.items():
            for key, value in provider().items():
                if isinstance(value, bool):
                    value = int(value)
                if not isinstance(value, (int, float)):
                    continue
                name = f"alertbot_{component}_{_NAME_SAFE.sub('_', key)}"
                yield GaugeMetricFamily(name, f"{component} {key}", value=float(value))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.components = ComponentCollector()
        self.registry.register(self.components)
        self.updates = Counter(
            "alertbot_telegram_updates", "Telegram updates handled", ["kind"], registry=self.registry
        )
        self.handler_errors = Counter(
            "alertbot_handler_errors", "Handler exceptions caught by the error router", registry=self.registry
        )
