"""Telegram's HTML: what a text with parse_mode=HTML becomes, or the 400 Telegram answers.

`parse_html` is a port of tdlib's parser, so error wording and edge cases match; beside it, the
trimming Telegram does before it stores a text, lengths in UTF-16 code units (as Telegram counts
them) and the bot_command entities Telegram marks in what users send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from standins.telegram.wire import JsonDict

# Telegram marks /commands anywhere in a text, not only at its start.
_COMMAND_RE: Final[re.Pattern[str]] = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?!\w)")


class EntityParseError(ValueError):
    """Text with parse_mode=HTML that Telegram would reject; the message is Telegram's wording."""


# --------------------------------------------------------------------------------------------
# Telegram HTML (port of tdlib's parse_html, so error wording and edge cases match)
# --------------------------------------------------------------------------------------------

_HTML_TAGS: Final[frozenset[str]] = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_SIMPLE_TAG_ENTITIES: Final[dict[str, str]] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_NAMED_HTML_ENTITIES: Final[dict[str, str]] = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
# tdlib's is_space(): NUL doubles as its end-of-string sentinel.
_HTML_SPACES: Final[frozenset[str]] = frozenset(" \t\r\n\0\v")


@dataclass
class _OpenTag:
    name: str
    argument: str
    utf16_offset: int
    result_index: int


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _decode_html_entity(text: str, pos: int) -> tuple[str, int] | None:
    """Decode ``&...`` at `pos`; returns (character, next index) or None to keep '&' literally."""
    n = len(text)
    end = pos + 1
    value = 0
    if end < n and text[end] == "#":
        end += 1
        if end < n and text[end] == "x":
            end += 1
            while end < n and text[end] in "0123456789abcdefABCDEF":
                value = value * 16 + int(text[end], 16)
                end += 1
                if value >= 0x10FFFF:
                    return None
        else:
            while end < n and "0" <= text[end] <= "9":
                value = value * 10 + int(text[end])
                end += 1
                if value >= 0x10FFFF:
                    return None
        if value == 0 or value >= 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            return None
        char = chr(value)
    else:
        while end < n and text[end].isascii() and text[end].isalpha():
            end += 1
        named = _NAMED_HTML_ENTITIES.get(text[pos + 1 : end])
        if named is None:
            return None
        char = named
    # The ';' is optional, as in tdlib.
    if end < n and text[end] == ";":
        end += 1
    return char, end


def parse_html(text: str) -> tuple[str, list[JsonDict]]:
    """Parse Telegram-flavoured HTML into (plain text, entities with UTF-16 offsets).

    Raises `EntityParseError` with tdlib's wording for anything Telegram answers
    "Bad Request: can't parse entities: ..." to. The result is not trimmed (see `_trim`).
    """
    n = len(text)

    def at(index: int) -> str:
        return text[index] if index < n else "\0"

    def error(message: str) -> EntityParseError:
        return EntityParseError(message)

    out: list[str] = []
    utf16 = 0
    stack: list[_OpenTag] = []
    entities: list[JsonDict] = []
    i = 0
    while i < n:
        c = text[i]
        if c == "&":
            decoded = _decode_html_entity(text, i)
            if decoded is not None:
                char, i = decoded
                out.append(char)
                utf16 += 2 if ord(char) > 0xFFFF else 1
                continue
        if c != "<":
            out.append(c)
            utf16 += 2 if ord(c) > 0xFFFF else 1
            i += 1
            continue

        begin = i
        i += 1
        if at(i) != "/":
            while at(i) not in _HTML_SPACES and at(i) != ">":
                i += 1
            if at(i) == "\0":
                raise error(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
            tag_name = text[begin + 1 : i].lower()
            if tag_name not in _HTML_TAGS:
                raise error(f'Unsupported start tag "{tag_name}" at byte offset {_byte_offset(text, begin)}')
            argument = ""
            while at(i) != ">":
                while at(i) != "\0" and at(i) in _HTML_SPACES:
                    i += 1
                if at(i) == ">":
                    break
                attribute_begin = i
                while at(i) not in _HTML_SPACES and at(i) not in "=>":
                    i += 1
                attribute_name = text[attribute_begin:i]
                if not attribute_name:
                    raise error(
                        f'Empty attribute name in the tag "{tag_name}" at byte offset {_byte_offset(text, begin)}'
                    )
                while at(i) != "\0" and at(i) in _HTML_SPACES:
                    i += 1
                if at(i) == "\0":
                    raise error(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                if at(i) != "=":
                    # A valueless attribute; only <blockquote expandable> means something.
                    if tag_name == "blockquote" and attribute_name == "expandable":
                        argument = "1"
                    continue
                i += 1
                while at(i) != "\0" and at(i) in _HTML_SPACES:
                    i += 1
                if at(i) == "\0":
                    raise error(f'Unclosed start tag "{tag_name}" at byte offset {_byte_offset(text, begin)}')
                value_chars: list[str] = []
                if at(i) not in "'\"":
                    # An unquoted name token: letters, digits, periods, hyphens; case-insensitive.
                    token_begin = i
                    while at(i).isascii() and (at(i).isalnum() or at(i) in ".-") and at(i) != "\0":
                        i += 1
                    value_chars.append(text[token_begin:i].lower())
                    if at(i) not in _HTML_SPACES and at(i) != ">":
                        raise error(f"Unexpected end of name token at byte offset {_byte_offset(text, token_begin)}")
                else:
                    quote = text[i]
                    i += 1
                    while at(i) != quote and at(i) != "\0":
                        if text[i] == "&":
                            decoded = _decode_html_entity(text, i)
                            if decoded is not None:
                                value_chars.append(decoded[0])
                                i = decoded[1]
                                continue
                        value_chars.append(text[i])
                        i += 1
                    if at(i) == quote:
                        i += 1
                if at(i) == "\0":
                    raise error(f"Unclosed start tag at byte offset {_byte_offset(text, begin)}")
                value = "".join(value_chars)
                if tag_name == "a" and attribute_name == "href":
                    argument = value
                elif tag_name == "code" and attribute_name == "class" and value.startswith("language-"):
                    argument = value[len("language-") :]
                elif tag_name == "span" and attribute_name == "class" and value.startswith("tg-"):
                    argument = value[len("tg-") :]
                elif tag_name == "tg-emoji" and attribute_name == "emoji-id":
                    argument = value
                elif tag_name == "blockquote" and attribute_name == "expandable":
                    argument = "1"
            if tag_name == "span" and argument != "spoiler":
                raise error(f'Tag "span" must have class "tg-spoiler" at byte offset {_byte_offset(text, begin)}')
            stack.append(_OpenTag(tag_name, argument, utf16, len(out)))
            i += 1  # past '>'
            continue

        # An end tag.
        if not stack:
            raise error(f"Unexpected end tag at byte offset {_byte_offset(text, begin)}")
        while at(i) not in _HTML_SPACES and at(i) != ">":
            i += 1
        end_tag_name = text[begin + 2 : i]
        while at(i) != "\0" and at(i) in _HTML_SPACES:
            i += 1
        if at(i) != ">":
            raise error(f"Unclosed end tag at byte offset {_byte_offset(text, begin)}")
        i += 1
        opened = stack.pop()
        if end_tag_name and end_tag_name != opened.name:
            raise error(
                f"Unmatched end tag at byte offset {_byte_offset(text, begin)}, expected "
                f'"</{opened.name}>", found "</{end_tag_name}>"'
            )
        length = utf16 - opened.utf16_offset
        if length <= 0:
            continue
        entity: JsonDict | None = None
        if opened.name in _SIMPLE_TAG_ENTITIES:
            entity = {"type": _SIMPLE_TAG_ENTITIES[opened.name]}
        elif opened.name == "tg-emoji":
            if not opened.argument.isdigit():
                raise error("Invalid custom emoji identifier specified")
            entity = {"type": "custom_emoji", "custom_emoji_id": opened.argument}
        elif opened.name == "a":
            url = opened.argument or "".join(out[opened.result_index :])
            match = re.fullmatch(r"tg://user\?id=(\d+)", url)
            if match:
                entity = {
                    "type": "text_mention",
                    "user": {"id": int(match.group(1)), "is_bot": False, "first_name": ""},
                }
            elif url.strip():
                entity = {"type": "text_link", "url": url}
        elif opened.name == "code":
            parent = stack[-1] if stack else None
            if parent is not None and parent.name == "pre" and parent.utf16_offset == opened.utf16_offset:
                # <pre><code class="language-x"> is one "pre" entity with a language.
                if opened.argument and not parent.argument:
                    parent.argument = opened.argument
            else:
                entity = {"type": "code"}
        elif opened.name == "pre":
            entity = {"type": "pre"}
            if opened.argument:
                entity["language"] = opened.argument
        elif opened.name == "blockquote":
            entity = {"type": "expandable_blockquote" if opened.argument else "blockquote"}
        if entity is not None:
            entity["offset"] = opened.utf16_offset
            entity["length"] = length
            entities.append(entity)
    if stack:
        raise error(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _trim(text: str, entities: list[JsonDict]) -> tuple[str, list[JsonDict]]:
    """Strip surrounding whitespace and clip entities, as Telegram does before storing a text."""
    stripped_left = text.lstrip()
    shift = _utf16_len(text) - _utf16_len(stripped_left)
    result = stripped_left.rstrip()
    total = _utf16_len(result)
    clipped: list[JsonDict] = []
    for entity in entities:
        start = max(entity["offset"] - shift, 0)
        end = min(entity["offset"] + entity["length"] - shift, total)
        if end > start:
            clipped.append({**entity, "offset": start, "length": end - start})
    return result, clipped


def _command_entities(text: str) -> list[JsonDict]:
    entities: list[JsonDict] = []
    for match in _COMMAND_RE.finditer(text):
        entities.append(
            {
                "type": "bot_command",
                "offset": _utf16_len(text[: match.start()]),
                "length": _utf16_len(match.group(0)),
            }
        )
    return entities
