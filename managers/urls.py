"""Connection URLs made safe to log or show: passwords and keys go, everything else stays."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# Query parameters that carry a secret (a DSN's password, PumpPortal's api-key, ...).
_SECRET_PARAMETER = re.compile(r"(?i)((?:^|&)(?:password|api[-_]?key|key|token|secret)=)[^&]*")


def redact_url(url: str) -> str:
    """scheme://user:secret@host/db?password=x&api-key=y -> scheme://user:***@host/db?password=***&api-key=***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostinfo = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        netloc = f"{userinfo}@{hostinfo}"
    query = _SECRET_PARAMETER.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
