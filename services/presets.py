"""Presets: named filter sets that admins define and users apply with one tap or follow.

Pure helpers read and write what an admin types after /setpreset (through domain.filters, so a
preset holds only what /set accepts); `PresetStore` queries the ``presets`` table. No Telegram
imports here. Details: docs/architecture.md, "Presets".
"""

from __future__ import annotations

import builtins
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.filters import Filters, FilterValueError, set_filter
from managers.postgres import PostgresManager
from services.subscribers import PG_FAILURES, StoreUnavailable

logger = logging.getLogger("alertbot.presets")

CODE_RE = re.compile(r"^[a-z0-9_]{1,24}$")  # the presets.code CHECK of migration 0004
MAX_TITLE = 64
MAX_DESCRIPTION = 300
LIST_TTL = 30.0  # seconds the preset list is kept in-process between admin changes
SORT_STEP = 10  # new presets go this far after the last one, leaving room to slot others in

# Phones "smarten" the quotes admins type; the definition syntax only knows the plain one.
_QUOTES = str.maketrans({c: '"' for c in "“”„‟«»＂"})
# One token: "a quoted string", NAME=VALUE (VALUE optionally quoted, for channel lists with spaces),
# or any other run of non-space characters (reported as an error).
_TOKEN_RE = re.compile(
    r'\s*(?:"(?P<quoted>[^"]*)"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?:"(?P<qvalue>[^"]*)"|(?P<value>[^\s"]*))'
    r"|(?P<other>\S+))"
)


class PresetDefinitionError(ValueError):
    """What an admin typed is not a preset definition; the message says what is wrong."""


@dataclass(frozen=True)
class Preset:
    code: str
    title: str
    description: str = ""
    filters: Filters = field(default_factory=Filters)
    sort_order: int = 0


@dataclass(frozen=True)
class PresetDefinition:
    """A parsed /setpreset: None for title or description means "keep what the preset has"."""

    code: str
    title: str | None
    description: str | None
    filters: Filters


def valid_code(code: str) -> bool:
    return bool(CODE_RE.match(code))


def parse_preset_definition(raw: str) -> PresetDefinition:
    """``CODE ["Title" ["Description"]] NAME=VALUE ...`` -> PresetDefinition.

    The filters listed are the preset's whole filter set (not a change to the old one), so at
    least one is required: an empty set would let every token through, which is more likely a
    slip than an intent. Raises PresetDefinitionError saying what is wrong.
    """
    text = raw.translate(_QUOTES).strip()
    if not text:
        raise PresetDefinitionError("the definition is empty")
    head, _, rest = text.partition(" ")
    code = head.strip().lower()
    if not valid_code(code):
        raise PresetDefinitionError(
            f"'{head[:40]}' is not a preset code: use 1 to 24 characters a-z, 0-9 or _ (like safe)"
        )
    if rest.count('"') % 2:
        raise PresetDefinitionError('a quote is not closed: put the title and description in "double quotes"')

    texts: list[str] = []
    pairs: list[tuple[str, str]] = []
    for match in _TOKEN_RE.finditer(rest):
        if match.group("other") is not None:
            hint = "" if pairs else '; a title goes in "double quotes"'
            raise PresetDefinitionError(f"'{match.group('other')[:40]}' is not NAME=VALUE (like min_mcap=50k){hint}")
        if match.group("quoted") is not None:
            if pairs:
                raise PresetDefinitionError("the title and description go before the filters")
            texts.append(" ".join(match.group("quoted").split()))
        elif match.group("name") is not None:
            value = match.group("qvalue") if match.group("qvalue") is not None else match.group("value")
            pairs.append((match.group("name").lower(), value or ""))
    if len(texts) > 2:
        raise PresetDefinitionError('only a "Title" and a "Description" may be quoted')
    title = texts[0] if texts else None
    description = texts[1] if len(texts) > 1 else None
    if title is not None and not 1 <= len(title) <= MAX_TITLE:
        raise PresetDefinitionError(f"the title must be 1 to {MAX_TITLE} characters")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise PresetDefinitionError(f"the description must be at most {MAX_DESCRIPTION} characters")
    if not pairs:
        raise PresetDefinitionError("a preset needs at least one filter NAME=VALUE (like min_mcap=50k)")

    filters = Filters()
    seen: set[str] = set()
    for name, value in pairs:
        if name in seen:
            raise PresetDefinitionError(f"{name} is given twice")
        seen.add(name)
        if not value.strip():
            raise PresetDefinitionError(f"{name} has no value (write {name}=VALUE)")
        try:
            filters = set_filter(filters, name, value)
        except FilterValueError as exc:
            raise PresetDefinitionError(str(exc)) from None
    return PresetDefinition(code, title, description, filters)


def _plain(value: Any) -> str:
    """A stored filter value as set_filter accepts it back (50000.0 -> 50000)."""
    if isinstance(value, (list, tuple, frozenset, set)):
        return ",".join(sorted(str(v) for v in value))
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def preset_definition(preset: Preset) -> str:
    """The preset as /setpreset arguments: parsing this gives the same preset back."""
    parts = [preset.code, f'"{preset.title}"']
    if preset.description:
        parts.append(f'"{preset.description}"')
    parts.extend(f"{name}={_plain(value)}" for name, value in preset.filters.to_dict().items())
    return " ".join(parts)


def _from_row(row: Mapping[str, Any]) -> Preset:
    return Preset(
        code=row["code"],
        title=row["title"],
        description=row["description"] or "",
        filters=Filters.from_dict(row["filters"] or {}),
        sort_order=int(row["sort_order"]),
    )


_COLUMNS = "code, title, description, filters, sort_order"


class PresetStore:
    """Business queries on presets. PostgreSQL failures raise StoreUnavailable.

    The list (/presets) is kept in-process for LIST_TTL seconds; this process's own changes drop
    it at once, another process's show within the TTL. `get` always reads PostgreSQL, so applying
    or following a preset never copies filters an admin has already replaced.
    """

    def __init__(
        self, postgres: PostgresManager, *, ttl: float = LIST_TTL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.postgres = postgres
        self.ttl = ttl
        self.clock = clock
        self._listed: tuple[float, list[Preset]] | None = None

    def forget(self) -> None:
        """Drop the cached list."""
        self._listed = None

    async def list(self) -> builtins.list[Preset]:
        now = self.clock()
        if self._listed is not None and now - self._listed[0] < self.ttl:
            return list(self._listed[1])
        try:
            rows = await self.postgres.fetch(f"SELECT {_COLUMNS} FROM presets ORDER BY sort_order, code")
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot list presets: {exc!r}") from exc
        presets = [_from_row(row) for row in rows]
        self._listed = (now, presets)
        return list(presets)

    async def get(self, code: str) -> Preset | None:
        if not valid_code(code):
            return None
        try:
            row = await self.postgres.fetchrow(f"SELECT {_COLUMNS} FROM presets WHERE code = $1", code)
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot read preset {code}: {exc!r}") from exc
        return None if row is None else _from_row(row)

    async def upsert(
        self,
        code: str,
        *,
        title: str | None,
        description: str | None,
        filters: Filters,
        updated_by: int | None,
    ) -> tuple[Preset | None, Preset]:
        """Create or change a preset; returns (old, new), old None when it was created.
        None title/description keep the old ones; a new preset needs a title (ValueError)."""
        if not valid_code(code):
            raise ValueError(f"bad preset code {code!r}")
        try:
            async with self.postgres.transaction() as conn:
                # The row lock makes two admins' changes of one preset take turns, so each
                # sees the other's result as its "old".
                row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM presets WHERE code = $1 FOR UPDATE", code)
                old = None if row is None else _from_row(row)
                if old is None:
                    if not title:
                        raise ValueError("a new preset needs a title")
                    new_row = await conn.fetchrow(
                        f"""
                        INSERT INTO presets (code, title, description, filters, sort_order, updated_by)
                        VALUES ($1, $2, $3, $4,
                                (SELECT COALESCE(max(sort_order), 0) + {SORT_STEP} FROM presets), $5)
                        ON CONFLICT (code) DO UPDATE
                           SET title = EXCLUDED.title, description = EXCLUDED.description,
                               filters = EXCLUDED.filters, updated_by = EXCLUDED.updated_by
                        RETURNING {_COLUMNS}
                        """,
                        code,
                        title,
                        description or "",
                        filters.to_dict(),
                        updated_by,
                    )
                else:
                    new_row = await conn.fetchrow(
                        f"""
                        UPDATE presets SET title = $2, description = $3, filters = $4, updated_by = $5
                         WHERE code = $1 RETURNING {_COLUMNS}
                        """,
                        code,
                        title if title is not None else old.title,
                        description if description is not None else old.description,
                        filters.to_dict(),
                        updated_by,
                    )
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot save preset {code}: {exc!r}") from exc
        finally:
            self.forget()
        assert new_row is not None
        new = _from_row(new_row)
        logger.info(
            "preset %s %s by %s: %s", code, "created" if old is None else "changed", updated_by, new.filters.to_dict()
        )
        return old, new

    async def delete(self, code: str) -> Preset | None:
        """Delete a preset; returns it, or None when there was none. PostgreSQL clears its
        followers' user_settings.preset_code (ON DELETE SET NULL); Redis is the caller's part."""
        if not valid_code(code):
            return None
        try:
            row = await self.postgres.fetchrow(f"DELETE FROM presets WHERE code = $1 RETURNING {_COLUMNS}", code)
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot delete preset {code}: {exc!r}") from exc
        finally:
            self.forget()
        if row is None:
            return None
        logger.info("preset %s deleted", code)
        return _from_row(row)

    async def followers(self, code: str) -> builtins.list[int]:
        """Telegram ids of everyone PostgreSQL says follows the preset. Call
        SubscriberStore.flush_pending() first so changes Redis holds are in PostgreSQL."""
        try:
            rows = await self.postgres.fetch(
                """
                SELECT u.telegram_id FROM user_settings s JOIN users u ON u.id = s.user_id
                 WHERE s.preset_code = $1 ORDER BY u.telegram_id
                """,
                code,
            )
        except PG_FAILURES as exc:
            raise StoreUnavailable(f"cannot list followers of preset {code}: {exc!r}") from exc
        return [int(row["telegram_id"]) for row in rows]
