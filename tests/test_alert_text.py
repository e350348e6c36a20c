"""The alert message: every field shown, hostile feed text neutralised, always a valid Telegram HTML.

Validity is checked the way production would find out: by sending the text through the
Telegram double, whose HTML parser is a port of Telegram's and answers 400 to bad markup.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from aiogram import Bot
from aiogram.enums import ParseMode

from domain.alert_text import (
    MAX_CALLERS_SHOWN,
    CallerLine,
    format_usd,
    is_solana_address,
    render_alert,
    render_digest,
    render_digest_line,
    safe_username,
    sanitize,
)
from domain.events import Channel, TokenInfo
from standins.telegram import FakeTelegramServer, RateLimits, SentRecord, parse_html

pytestmark = pytest.mark.timeout(30)

ADDRESS = "8yZ1rj5nHbUFuCbnoowE6rHLZYiuTe1tbxEskgzUpump"
CREATED = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SEEN = datetime(2026, 11, 20, 10, 1, 30, tzinfo=UTC)
ALLOWED_LINK_PREFIXES = (
    f"https://dexscreener.com/solana/{ADDRESS}",
    f"https://pump.fun/coin/{ADDRESS}",
    f"https://solscan.io/token/{ADDRESS}",
    "https://t.me/",
)

HOSTILE_NAMES = [
    "<script>alert(1)</script>",
    '</code><a href="https://evil.example">claim airdrop</a>',
    "&amp; &lt;b&gt; & < > \" '",
    "".join(chr(c) for c in range(0x20)) + "ctrl",
    "\u202eevil\u202c \u2066iso\u2069 zero\u200bwidth\ufeff \x85\x9b",
    "A" * 300,
    "🚀 Moon 🐸 Frog 👨‍💻 dev",
    "<b>unclosed",
    "<tg-spoiler>x</tg-spoiler><pre>",
]


def token(**overrides: object) -> TokenInfo:
    fields: dict[str, object] = dict(
        address=ADDRESS,
        symbol="CASHELON",
        name="Cash Elon",
        market_cap_usd=41_250.0,
        liquidity_usd=9_800.0,
        holders=212,
        price_usd=0.00004125,
        created_at=CREATED,
    )
    fields.update(overrides)
    return TokenInfo(**fields)  # type: ignore[arg-type]


def alpha() -> CallerLine:
    return CallerLine(Channel("-1001234567890", "Alpha Calls", "alphacalls", 0.41, 2.7), SEEN)


@pytest.fixture
async def server() -> AsyncIterator[FakeTelegramServer]:
    async with FakeTelegramServer(limits=RateLimits.unlimited()) as fake:
        yield fake


@pytest.fixture
async def bot(server: FakeTelegramServer) -> AsyncIterator[Bot]:
    created = server.create_bot()
    yield created
    await created.session.close()


async def send(bot: Bot, server: FakeTelegramServer, text: str, chat_id: int = 42) -> SentRecord:
    """Send as production does; the double answers 400 (an exception here) to invalid HTML."""
    message = await bot.send_message(chat_id, text, parse_mode=ParseMode.HTML)
    return next(r for r in server.sent if r.message_id == message.message_id and r.chat_id == chat_id)


def entity_texts(record: SentRecord, kind: str) -> list[str]:
    """The text each entity of `kind` covers (offsets are in UTF-16 code units, as Telegram's)."""
    units = record.body.encode("utf-16-le")
    return [
        units[2 * e["offset"] : 2 * (e["offset"] + e["length"])].decode("utf-16-le")
        for e in record.entities
        if e["type"] == kind
    ]


def links(record: SentRecord) -> list[str]:
    return [e["url"] for e in record.entities if e["type"] == "text_link"]


async def test_all_fields_shown(bot: Bot, server: FakeTelegramServer) -> None:
    second = CallerLine(Channel("-1009", "Beta Signals"), SEEN)
    html = render_alert(token(), [alpha(), second], seen_at=SEEN)
    record = await send(bot, server, html)
    text = record.body

    assert "CASHELON" in text and "Cash Elon" in text
    assert any(e["type"] == "bold" for e in record.entities)
    assert entity_texts(record, "code") == [ADDRESS]  # the full address, tap to copy
    assert "Market cap: $41.3K" in text
    assert "Liquidity: $9.8K" in text
    assert "Holders: 212" in text
    assert "Age: 1m 30s" in text
    assert "Alpha Calls" in text and "win rate 41%" in text and "avg gain 2.7x" in text
    assert "Beta Signals" in text
    assert "10:01:30 UTC" in text
    assert sorted(links(record)) == sorted(
        [
            "https://t.me/alphacalls",
            f"https://dexscreener.com/solana/{ADDRESS}",
            f"https://pump.fun/coin/{ADDRESS}",
            f"https://solscan.io/token/{ADDRESS}",
        ]
    )


async def test_missing_fields_shown_as_unknown(bot: Bot, server: FakeTelegramServer) -> None:
    bare = TokenInfo(address=ADDRESS)
    html = render_alert(bare, [CallerLine(Channel("-1001"))], seen_at=SEEN)
    text = (await send(bot, server, html)).body
    for label in ("Market cap", "Liquidity", "Holders", "Age"):
        assert f"{label}: unknown" in text
    assert "#-1001" in text  # a channel with neither name nor username is still listed
    assert "win rate" not in text and "avg gain" not in text


def test_nonsense_numbers_are_unknown() -> None:
    html = render_alert(
        token(market_cap_usd=float("nan"), liquidity_usd=-5.0, holders=-1),
        [CallerLine(Channel("-1", "X", win_rate=41.0, avg_gain=float("inf")))],
        seen_at=SEEN,
    )
    text, _ = parse_html(html)
    assert "Market cap: unknown" in text and "Liquidity: unknown" in text and "Holders: unknown" in text
    assert "win rate" not in text and "avg gain" not in text  # 41.0 is not a share 0..1


@pytest.mark.parametrize("hostile", HOSTILE_NAMES)
async def test_hostile_names_are_escaped(bot: Bot, server: FakeTelegramServer, hostile: str) -> None:
    caller = CallerLine(Channel("-1001", hostile, hostile, 0.5, 3.0), SEEN)
    html = render_alert(token(symbol=hostile, name=hostile), [caller], seen_at=SEEN)
    record = await send(bot, server, html)

    # Only our own tags: never a link other than ours, never a tag the name carried.
    assert all(url.startswith(ALLOWED_LINK_PREFIXES) for url in links(record))
    assert "https://t.me/" not in " ".join(links(record))  # the hostile "username" got no link
    assert {e["type"] for e in record.entities} <= {"bold", "code", "text_link"}
    assert entity_texts(record, "code") == [ADDRESS]
    for char in record.body:
        assert char in "\n" or ord(char) >= 0x20, repr(char)
        assert not 0x7F <= ord(char) <= 0x9F
        assert char not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200b\u200e\u200f\ufeff"


def test_random_hostile_input_never_breaks_the_markup() -> None:
    """Random strings rich in markup characters, checked with the double's port of Telegram's parser."""
    rng = random.Random(1234)
    alphabet = "<>&\"'/=;#x \n\t\x00\x1b\x85\u202e\u2066\u200b\u200d\ufeffab1aA🚀👨\u0301"
    for _ in range(300):

        def junk(n: int) -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))

        callers = [
            CallerLine(Channel(junk(8), junk(120), junk(12), rng.random(), rng.random() * 10), SEEN)
            for _ in range(rng.randint(0, 15))
        ]
        html = render_alert(
            token(symbol=junk(40), name=junk(120), address=rng.choice([ADDRESS, junk(50)])), callers, seen_at=SEEN
        )
        text, entities = parse_html(html)  # raises on anything Telegram would refuse
        assert len(text.encode("utf-16-le")) // 2 < 4096
        assert all(e["url"].startswith(ALLOWED_LINK_PREFIXES) for e in entities if e["type"] == "text_link")
        assert {e["type"] for e in entities} <= {"bold", "code", "text_link"}


def test_sanitize_rules() -> None:
    assert sanitize("<script>", 20) == "&lt;script&gt;"
    assert sanitize("&amp;", 20) == "&amp;amp;"
    assert sanitize("a\x00b\x1fc\u202ed\u2066e\u200bf", 20) == "abcdef"
    assert sanitize("  many \n\t spaces\u2028here ", 40) == "many spaces here"
    capped = sanitize("A" * 300, 64)
    assert len(capped) == 64 and capped.endswith("…")
    # The cap counts visible characters, so escaping cannot push past it by more than entities.
    assert sanitize("&" * 100, 20) == "&amp;" * 19 + "…"
    assert sanitize("🚀 Moon", 20) == "🚀 Moon"
    assert sanitize("👨\u200d💻", 20) == "👨\u200d💻"  # an emoji sequence keeps its joiner
    assert sanitize(None, 20) == ""
    assert sanitize("\u3164\u3164", 20) == ""  # invisible filler letters


def test_usernames_and_addresses_are_validated() -> None:
    assert safe_username("alphacalls") == "alphacalls"
    assert safe_username("@alpha_calls") == "alpha_calls"
    for bad in ("abc", "a" * 33, "evil.com/x", 'x" onmouseover="y', "alpha calls", "@@alpha", None, 5):
        assert safe_username(bad) is None
    assert is_solana_address(ADDRESS)
    for bad in ("0xdeadbeef", ADDRESS + "O", "short", ADDRESS.replace("8", "0"), None):
        assert not is_solana_address(bad)


async def test_invalid_address_shown_escaped_without_links(bot: Bot, server: FakeTelegramServer) -> None:
    raw = '"><a href="https://evil.example">x</a>'
    record = await send(bot, server, render_alert(token(address=raw), [alpha()], seen_at=SEEN))
    assert links(record) == ["https://t.me/alphacalls"]
    assert not any(e["type"] == "code" for e in record.entities)
    assert raw in record.body  # shown as text, for whoever investigates


async def test_fifty_channels_stay_under_the_limit(bot: Bot, server: FakeTelegramServer) -> None:
    # Worst-case names: every character escapes to a 5-6 character entity.
    callers = [CallerLine(Channel(f"-100{i}", '"' * 200, f"channel_{i:03d}", 0.5, 2.0), SEEN) for i in range(50)]
    html = render_alert(token(symbol="&" * 50, name="<" * 200), callers, seen_at=SEEN)
    assert len(html.encode("utf-16-le")) // 2 < 4096
    record = await send(bot, server, html)
    shown = [url for url in links(record) if url.startswith("https://t.me/")]
    assert 1 <= len(shown) <= MAX_CALLERS_SHOWN
    assert f"+{50 - len(shown)} more" in record.body
    assert "Called by (50)" in record.body

    friendly = [CallerLine(Channel(f"-100{i}", f"Channel {i}", f"channel_{i:03d}", 0.5, 2.0), SEEN) for i in range(50)]
    record = await send(bot, server, render_alert(token(), friendly, seen_at=SEEN))
    assert len([u for u in links(record) if u.startswith("https://t.me/")]) == MAX_CALLERS_SHOWN
    assert f"+{50 - MAX_CALLERS_SHOWN} more" in record.body


async def test_russian_labels(bot: Bot, server: FakeTelegramServer) -> None:
    html = render_alert(token(), [alpha()], seen_at=SEEN, language="ru")
    text = (await send(bot, server, html)).body
    assert "Капитализация: $41.3K" in text
    assert "Ликвидность" in text and "Холдеры" in text and "Возраст" in text
    assert "винрейт 41%" in text
    assert "Market cap" not in text
    unknown = render_alert(TokenInfo(address=ADDRESS), [], seen_at=SEEN, language="ru-RU")
    assert "неизвестно" in unknown
    assert "Market cap" in render_alert(token(), [], seen_at=SEEN, language="xx")


def test_duplicates_dropped_and_delay_shown() -> None:
    html = render_alert(token(), [alpha(), alpha()], seen_at=SEEN, now=SEEN + timedelta(minutes=3))
    text, _ = parse_html(html)
    assert text.count("Alpha Calls") == 1
    assert "(3m ago)" in text
    assert "ago" not in parse_html(render_alert(token(), [], seen_at=SEEN, now=SEEN))[0]


def test_a_call_naming_its_channel_keeps_the_known_statistics() -> None:
    known = Channel("-1001", None, "alphacalls", 0.41, 2.7, 118)
    merged = known.merged(Channel("-1001", "Alpha Calls"))
    assert merged == Channel("-1001", "Alpha Calls", "alphacalls", 0.41, 2.7, 118)
    assert merged.refs == {"-1001", "@alphacalls"}
    assert Channel("-1002").win_rate is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (980, "$980"),
        (41_250, "$41.3K"),
        (1_250_000, "$1.25M"),
        (999_960, "$1M"),
        (3.1e9, "$3.1B"),
        (0, "$0"),
        (None, None),
        (float("nan"), None),
        (-1, None),
    ],
)
def test_money_is_compact(value: float | None, shown: str | None) -> None:
    assert format_usd(value) == shown


@pytest.mark.parametrize(("language", "title"), [("en", "81 alerts"), ("ru", "81 алертов")])
async def test_a_long_digest_continues_in_numbered_parts_keeping_every_alert(
    bot: Bot, server: FakeTelegramServer, language: str, title: str
) -> None:
    rng = random.Random(7)
    base58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    addresses = ["".join(rng.choice(base58) for _ in range(44)) for _ in range(81)]
    # Symbols that escape to entities, the longest a line can get.
    lines = [
        render_digest_line(token(address=address, symbol="&" * 30), [alpha()], seen_at=SEEN, language=language)
        for address in addresses
    ]
    parts = render_digest(lines, language)
    assert len(parts) >= 2 and sum(part.lines for part in parts) == 81
    received: list[str] = []
    for index, part in enumerate(parts, start=1):
        assert len(part.html.encode("utf-16-le")) // 2 < 4096
        body = (await send(bot, server, part.html)).body  # the double refuses bad HTML or too long
        first_line = body.split("\n")[0]
        assert title in first_line and f"({index}/{len(parts)})" in first_line
        received.append(body)
    shown = [address for body in received for address in sorted((a for a in addresses if a in body), key=body.index)]
    assert shown == addresses  # every alert once, in order
    assert not any(label in "".join(received) for label in ("more", "ещё"))
    [single] = render_digest(lines[:3], language)
    assert single.lines == 3 and "/" not in parse_html(single.html)[0].split("\n")[0]
