"""A subscriber as the rules see it: filters, plan, language; and what users.language may hold."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from domain.filters import Filters


@dataclass(frozen=True)
class Subscriber:
    telegram_id: int
    filters: Filters = field(default_factory=Filters)
    paused: bool = False
    status: str = "active"  # active / blocked / banned
    is_admin: bool = False
    plan_expires_at: datetime | None = None
    language: str = "en"
    username: str | None = None
    first_name: str | None = None
    # The preset followed (services/presets.py): an admin's change of it replaces these filters.
    preset: str | None = None
    # Follow-ups after an alert: the lowest multiple worth a message (2 = every threshold), 0 = none.
    followup_min: int = 2
    # The daily and best-of-day reports.
    reports: bool = True

    def has_active_plan(self, now: datetime) -> bool:
        return self.plan_expires_at is not None and self.plan_expires_at > now

    def receives_alerts(self, now: datetime) -> bool:
        """Only subscribers with an active plan, and admins, receive token alerts."""
        if self.status != "active" or self.paused:
            return False
        return self.is_admin or self.has_active_plan(now)


def language_of(language_code: str | None) -> str:
    """What users.language may hold: 'pt-BR' -> 'pt'; anything odd -> 'en'."""
    base = (language_code or "").split("-")[0].split("_")[0].lower()
    return base if 2 <= len(base) <= 3 and base.isascii() and base.isalpha() else "en"
