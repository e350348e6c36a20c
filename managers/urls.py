"""Connection URLs made safe to log: the password goes, everything else stays."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit


def redact_credentials(url: str) -> str:
    """scheme://user:secret@host/db?password=x -> scheme://user:***@host/db?password=***."""
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
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
