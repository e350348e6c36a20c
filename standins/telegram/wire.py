"""The Bot API's request and answer shapes, shared by every part of the local server.

Request parameters with Telegram's lenient typing (`_Params`), uploaded files, successful
results that carry a description, and error answers (`_ApiError`): raised anywhere inside a
method handler, answered as ``{"ok": false, "error_code": N, "description": "..."}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

JsonDict = dict[str, Any]


class _ApiError(Exception):
    """An error answer; raised anywhere inside a method handler."""

    def __init__(self, status: int, description: str, parameters: JsonDict | None = None) -> None:
        super().__init__(description)
        self.status: int = status
        self.description: str = description
        self.parameters: JsonDict | None = parameters


def _bad_request(message: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {message}")


@dataclass(frozen=True)
class _Upload:
    filename: str
    content_type: str
    content: bytes


class _Params:
    """Request parameters with Telegram's lenient typing.

    Values are strings when they came from a query string, a urlencoded or a multipart body
    (aiogram JSON-encodes every non-string value, including nested objects), and native JSON
    values when the body was application/json; the accessors accept both.
    """

    _TRUE: Final[frozenset[str]] = frozenset({"true", "1", "yes", "on"})

    def __init__(self, raw: JsonDict, files: dict[str, _Upload]) -> None:
        self.raw: JsonDict = raw
        self.files: dict[str, _Upload] = files

    def present(self, name: str) -> bool:
        value = self.raw.get(name)
        return value is not None and value != ""

    def get_str(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        return json.dumps(value)

    def get_int(self, name: str, default: int | None = None) -> int | None:
        value = self.raw.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise _bad_request(f"invalid {name} specified") from None

    def get_bool(self, name: str) -> bool:
        value = self.raw.get(name)
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return value != 0
        if isinstance(value, str):
            return value.strip().lower() in self._TRUE
        return False

    def get_json(self, name: str, error: str) -> Any:
        value = self.raw.get(name)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise _bad_request(error) from None
        return value


@dataclass(frozen=True)
class _WithDescription:
    """A successful result Telegram answers with an extra "description" (setWebhook & co.)."""

    result: Any
    description: str
