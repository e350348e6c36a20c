"""What the identifiers that come from outside may look like: token addresses, channel ids, usernames.

Pure predicates, no I/O. The feed adapters refuse a frame whose identifiers fail them (an id
becomes a Redis key, a log line and a database row, so `=`, `,`, newlines or a kilobyte of text
must never get that far), and the alert text links only what passes them.
"""

from __future__ import annotations

import re

__all__ = ["is_channel_id", "is_solana_address", "is_telegram_username"]

# Matched whole with fullmatch: "^...$" would let a trailing newline through.
# Base58 (no 0, O, I, l); Solana addresses are 32 bytes, i.e. 32-44 base58 characters.
_BASE58_ADDRESS_RE = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
# A Telegram chat id: an optional minus and digits (channels are -100 followed by 10-13 digits).
_CHANNEL_ID_RE = re.compile(r"-?[0-9]{1,20}")
# Telegram's rule for usernames: 5 to 32 letters, digits and underscores.
_USERNAME_RE = re.compile(r"[A-Za-z0-9_]{5,32}")


def is_solana_address(address: object) -> bool:
    return isinstance(address, str) and _BASE58_ADDRESS_RE.fullmatch(address) is not None


def is_channel_id(channel_id: object) -> bool:
    return isinstance(channel_id, str) and _CHANNEL_ID_RE.fullmatch(channel_id) is not None


def is_telegram_username(username: object) -> bool:
    """A username without its '@'."""
    return isinstance(username, str) and _USERNAME_RE.fullmatch(username) is not None
