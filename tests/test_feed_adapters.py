"""The feed adapters: alert-feed and PumpPortal frames -> internal events (pure, no I/O)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from domain.events import CallEvent, Channel, ChannelStatsEvent, CreateEvent, MigrateEvent, PriceEvent
from domain.feed_adapters import (
    FrameError,
    PumpPortalNotice,
    classify_notice,
    parse_alert_frame,
    parse_pumpportal_frame,
    pumpportal_parser,
    pumpportal_url,
    sol_amount,
)
from standins import feedgen

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
SOL_USD = 150.0

# --- PumpPortal frames shaped like captured traffic (values and addresses made up) ------------

_rng = random.Random(42)
MINT = feedgen.make_address(_rng, pump=True)
BONK_MINT = feedgen.make_address(_rng, pump=False)
CREATOR = feedgen.make_address(_rng, pump=False)
TRADER = feedgen.make_address(_rng, pump=False)
CURVE = feedgen.make_address(_rng, pump=False)


def signature(n: int) -> str:
    return "".join(random.Random(n).choice(feedgen.BASE58) for _ in range(88))


def pp_create(mint: str = MINT, n: int = 1) -> dict[str, Any]:
    """A pump.fun creation as subscribeNewToken delivers it (solAmount as an int, as seen live)."""
    return {
        "signature": signature(n),
        "mint": mint,
        "traderPublicKey": CREATOR,
        "txType": "create",
        "initialBuy": 97_545_454.545454,
        "solAmount": 3,
        "bondingCurveKey": CURVE,
        "vTokensInBondingCurve": 975_454_545.454546,
        "vSolInBondingCurve": 32.999999999999986,
        "marketCapSol": 33.830382106244144,
        "name": "Moon Dog   ",
        "symbol": " MDOG ",
        "uri": "https://ipfs.io/ipfs/QmMoonDogMetadata",
        "is_mayhem_mode": False,
        "pool": "pump",
    }


def pp_trade(tx_type: str = "buy", mint: str = MINT, n: int = 2, **override: Any) -> dict[str, Any]:
    frame = {
        "signature": signature(n),
        "mint": mint,
        "traderPublicKey": TRADER,
        "txType": tx_type,
        "tokenAmount": 4_265_342.503241,
        "solAmount": 0.25,
        "newTokenBalance": 4_265_342.503241,
        "bondingCurveKey": CURVE,
        "vTokensInBondingCurve": 872_139_540.970454,
        "vSolInBondingCurve": 36.90981110863929,
        "marketCapSol": 42.32146,
        "pool": "pump",
    }
    frame.update(override)
    return frame


def pp_migrate(mint: str = MINT, n: int = 3) -> dict[str, Any]:
    return {"signature": signature(n), "mint": mint, "txType": "migrate", "pool": "pump-amm"}


def pp_bonk_create(n: int = 4) -> dict[str, Any]:
    """A LaunchLab ("bonk") creation: other field names for the pool's reserves, no curve key."""
    return {
        "signature": signature(n),
        "mint": BONK_MINT,
        "traderPublicKey": CREATOR,
        "txType": "create",
        "solInPool": 0.992,
        "tokensInPool": 965_739_053.104158,
        "newTokenBalance": 34_260_946.895842,
        "name": "Bonk Cat ",
        "symbol": "BCAT",
        "pool": "bonk",
    }


ACK_NEW_TOKEN = {"message": "Successfully subscribed to token creation events."}


def pp(frame: Any, sol_usd: float | None = SOL_USD) -> Any:
    return parse_pumpportal_frame(json.dumps(frame), sol_usd, received_at=1.5, now=NOW)


# --- the alert feed: the committed sample ------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    return feedgen.load_sample()


def test_the_whole_sample_parses_to_events_or_none_for_unknown_types(sample):
    kinds: Counter[str] = Counter()
    for frame in sample:
        event = parse_alert_frame(json.dumps(frame), received_at=2.0)
        if frame["type"] in feedgen.KNOWN_TYPES:
            assert event is not None and event.kind == frame["type"]
            assert event.received_at == 2.0
            kinds[event.kind] += 1
        else:
            assert event is None
    assert kinds == Counter(f["type"] for f in sample if f["type"] in feedgen.KNOWN_TYPES)


def test_sample_calls_keep_every_field_and_text_is_not_escaped(sample):
    for frame in sample:
        if frame["type"] != "call":
            continue
        event = parse_alert_frame(json.dumps(frame))
        assert isinstance(event, CallEvent)
        token = frame["token"]
        assert event.token.address == token["address"]
        assert event.token.symbol == token["symbol"].strip()
        assert event.token.name == ((token.get("name") or "").strip() or None)
        assert event.token.market_cap_usd == token["market_cap_usd"]
        assert event.token.holders == token.get("holders")
        assert event.channel.id == frame["channel"]["id"]
        assert event.called_at == feedgen.parse_ts(frame["called_at"])
        assert event.called_at.tzinfo is not None
    names = [
        parse_alert_frame(json.dumps(f)).token.name or ""  # type: ignore[union-attr]
        for f in sample
        if f["type"] == "call"
    ]
    assert any("<script>" in name for name in names)  # raw: escaping happens at rendering


def test_sample_event_keys_are_unique(sample):
    keys = [e.key for e in map(lambda f: parse_alert_frame(json.dumps(f)), sample) if e is not None]
    assert len(keys) == len(set(keys))


# --- the alert feed: coercions -----------------------------------------------------------------

ADDRESS = "8yZ1rj5nHbUFuCbnoowE6rHLZYiuTe1tbxEskgzUpump"
CALL: dict[str, Any] = {
    "type": "call",
    "token": {
        "address": ADDRESS,
        "symbol": "CASHELON",
        "name": "Cash Elon",
        "chain": "solana",
        "market_cap_usd": 41250.0,
        "liquidity_usd": 9800.0,
        "holders": 212,
        "price_usd": 0.00004125,
        "created_at": "2026-11-20T10:00:00Z",
    },
    "channel": {"id": "-1001234567890", "name": "Alpha Calls", "username": "alphacalls"},
    "called_at": "2026-11-20T10:01:30Z",
}


def with_token(**changes: Any) -> str:
    frame = json.loads(json.dumps(CALL))
    for key, value in changes.items():
        if value is ...:
            frame["token"].pop(key)
        else:
            frame["token"][key] = value
    return json.dumps(frame)


def test_the_contract_examples_parse():
    call = parse_alert_frame(json.dumps(CALL))
    assert isinstance(call, CallEvent)
    assert call.token.holders == 212 and call.token.liquidity_usd == 9800.0
    assert call.token.created_at == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert call.called_at == datetime(2026, 11, 20, 10, 1, 30, tzinfo=UTC)
    assert call.channel.username == "alphacalls"
    price = parse_alert_frame(
        f'{{"type": "price", "address": "{ADDRESS}", "price_usd": 0.0000825,'
        ' "market_cap_usd": 82500.0, "ts": "2026-11-20T10:20:00Z"}'
    )
    assert price == PriceEvent(ADDRESS, 0.0000825, 82500.0, datetime(2026, 11, 20, 10, 20, tzinfo=UTC))
    channel = parse_alert_frame(
        '{"type": "channel", "id": "-1001234567890", "name": "Alpha Calls", "username": "alphacalls",'
        ' "win_rate": 0.41, "avg_gain": 2.7, "calls": 118}'
    )
    assert channel == ChannelStatsEvent(Channel("-1001234567890", "Alpha Calls", "alphacalls", 0.41, 2.7, 118))


def test_numbers_as_strings_and_ints_are_coerced():
    event = parse_alert_frame(with_token(market_cap_usd="41250.5", holders="212", price_usd=1, liquidity_usd=" 9800 "))
    assert isinstance(event, CallEvent)
    assert event.token.market_cap_usd == 41250.5
    assert event.token.holders == 212
    assert event.token.price_usd == 1.0
    assert event.token.liquidity_usd == 9800.0
    assert parse_alert_frame(with_token(holders=212.0)).token.holders == 212  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "field, value",
    [
        ("market_cap_usd", -5.0),
        ("market_cap_usd", "NaN"),
        ("market_cap_usd", "inf"),
        ("market_cap_usd", "lots"),
        ("market_cap_usd", True),
        ("market_cap_usd", [1]),
        ("liquidity_usd", -1),
        ("holders", -3),
        ("holders", 2.5),
        ("price_usd", 0),
        ("created_at", "yesterday"),
        ("name", 42),
        ("symbol", "   "),
        ("name", None),
        ("liquidity_usd", ...),
        ("created_at", ...),
    ],
)
def test_an_invalid_or_missing_optional_field_becomes_none_not_an_error(field, value):
    event = parse_alert_frame(with_token(**{field: value}))
    assert isinstance(event, CallEvent)
    assert getattr(event.token, field) is None


def test_json_nan_and_infinity_in_optional_fields_become_none():
    text = json.dumps(CALL).replace("41250.0", "NaN").replace("9800.0", "-Infinity")
    event = parse_alert_frame(text)
    assert isinstance(event, CallEvent)
    assert event.token.market_cap_usd is None and event.token.liquidity_usd is None


def test_text_is_stripped_but_not_escaped_and_channel_ids_become_strings():
    frame = json.loads(json.dumps(CALL))
    frame["token"]["name"] = "  <b>Cash</b> & Co \n"
    frame["token"]["symbol"] = "\tCASH "
    frame["channel"] = {"id": -1001234567890, "name": " Alpha ", "username": "@alphacalls"}
    event = parse_alert_frame(json.dumps(frame))
    assert isinstance(event, CallEvent)
    assert event.token.name == "<b>Cash</b> & Co"
    assert event.token.symbol == "CASH"
    assert event.channel == Channel("-1001234567890", "Alpha", "alphacalls")
    stats = parse_alert_frame('{"type": "channel", "id": 77, "win_rate": "0.5", "calls": "9"}')
    assert stats == ChannelStatsEvent(Channel("77", win_rate=0.5, calls=9))


def test_timestamps_become_aware_utc():
    for text, expected in [
        ("2026-11-20T10:01:30Z", datetime(2026, 11, 20, 10, 1, 30, tzinfo=UTC)),
        ("2026-11-20T12:01:30+02:00", datetime(2026, 11, 20, 10, 1, 30, tzinfo=UTC)),
        ("2026-11-20T10:01:30.250Z", datetime(2026, 11, 20, 10, 1, 30, 250000, tzinfo=UTC)),
        ("2026-11-20T10:01:30", datetime(2026, 11, 20, 10, 1, 30, tzinfo=UTC)),  # naive: UTC
    ]:
        frame = dict(CALL, called_at=text)
        event = parse_alert_frame(json.dumps(frame))
        assert event.called_at == expected and event.called_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    epoch = parse_alert_frame(json.dumps(dict(CALL, called_at=1795687290)))
    assert epoch.called_at == datetime.fromtimestamp(1795687290, tz=UTC)  # type: ignore[union-attr]
    millis = parse_alert_frame(json.dumps(dict(CALL, called_at=1795687290000)))
    assert millis.called_at == epoch.called_at  # type: ignore[union-attr]


def test_channel_stats_out_of_range_become_none():
    event = parse_alert_frame('{"type": "channel", "id": "-1", "win_rate": 41, "avg_gain": -2, "calls": -1}')
    assert event == ChannelStatsEvent(Channel("-1"))


def test_unknown_types_are_ignored():
    assert parse_alert_frame('{"type": "heartbeat", "ts": "2026-11-20T10:00:00Z"}') is None
    assert parse_alert_frame('{"type": "hello", "feed": "x"}') is None
    assert parse_alert_frame('{"type": "CALL"}') is None  # types are case-sensitive names


MALFORMED: list[tuple[str, str]] = [
    ("", "invalid JSON"),
    ("{not json", "invalid JSON"),
    ('{"type": "call", ', "invalid JSON"),
    ("null", "not a JSON object"),
    ("[1, 2]", "not a JSON object"),
    ('"call"', "not a JSON object"),
    ("42", "not a JSON object"),
    ("{}", "missing type"),
    ('{"type": 5}', "invalid type"),
    ('{"type": "call"}', "missing token"),
    ('{"type": "call", "token": "8yZ1"}', "invalid token"),
    (with_token(address=...), "missing token.address"),
    (with_token(address=12345), "invalid token.address"),
    (with_token(address="   "), "invalid token.address"),
    (json.dumps({k: v for k, v in CALL.items() if k != "channel"}), "missing channel"),
    (json.dumps(dict(CALL, channel={"name": "x"})), "missing channel.id"),
    (json.dumps(dict(CALL, channel={"id": True})), "invalid channel.id"),
    (json.dumps({k: v for k, v in CALL.items() if k != "called_at"}), "missing called_at"),
    (json.dumps(dict(CALL, called_at="soon")), "invalid called_at"),
    ('{"type": "price", "price_usd": 1, "ts": "2026-11-20T10:00:00Z"}', "missing address"),
    (f'{{"type": "price", "address": "{ADDRESS}", "ts": "2026-11-20T10:00:00Z"}}', "missing price_usd"),
    (
        f'{{"type": "price", "address": "{ADDRESS}", "price_usd": "x", "ts": "2026-11-20T10:00:00Z"}}',
        "invalid price_usd",
    ),
    (
        f'{{"type": "price", "address": "{ADDRESS}", "price_usd": -1, "ts": "2026-11-20T10:00:00Z"}}',
        "invalid price_usd",
    ),
    (
        f'{{"type": "price", "address": "{ADDRESS}", "price_usd": NaN, "ts": "2026-11-20T10:00:00Z"}}',
        "invalid price_usd",
    ),
    (f'{{"type": "price", "address": "{ADDRESS}", "price_usd": 1}}', "missing ts"),
    ('{"type": "channel", "name": "x"}', "missing id"),
]


@pytest.mark.parametrize("text, reason", MALFORMED)
def test_malformed_frames_raise_frame_error_with_a_short_reason(text, reason):
    with pytest.raises(FrameError) as error:
        parse_alert_frame(text)
    assert error.value.reason == reason
    assert isinstance(error.value, ValueError)


# Identifiers that would reach Redis keys, logs and rows if the adapter let them through.
BAD_CHANNEL_IDS: list[Any] = [
    "-100123=4567",
    "-1001,-1002",
    "-100123\n4567",
    "x" * 1024,
    "1" * 1024,
    "alphacalls",
    "@alphacalls",
    "-",
    "",
    "12 34",
    "-100123\u0660",
    10**30,
    -(10**25),
    1.5,
    ["-1"],
    {"id": "-1"},
]
BAD_ADDRESSES: list[Any] = [
    ADDRESS + "=",
    ADDRESS[:20] + "," + ADDRESS[21:],
    ADDRESS[:-1] + "\n" + "x",
    "A" * 31,
    "A" * 45,
    "0" * 44,
    "O" * 44,
    "I" * 44,
    "l" * 44,
    "A" * 1024,
    "8yZ1pump",
    "A" * 43 + "\u00e9",
]


@pytest.mark.parametrize("channel_id", BAD_CHANNEL_IDS)
def test_a_call_from_a_channel_id_that_is_no_telegram_chat_id_is_malformed(channel_id: Any) -> None:
    with pytest.raises(FrameError) as error:
        parse_alert_frame(json.dumps(dict(CALL, channel={"id": channel_id, "name": "x"})))
    assert error.value.reason == "invalid channel.id"
    with pytest.raises(FrameError) as error:
        parse_alert_frame(json.dumps({"type": "channel", "id": channel_id, "win_rate": 0.5}))
    assert error.value.reason == "invalid id"


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_a_token_address_that_is_no_solana_address_is_malformed(address: Any) -> None:
    with pytest.raises(FrameError) as error:
        parse_alert_frame(with_token(address=address))
    assert error.value.reason == "invalid token.address"
    with pytest.raises(FrameError) as error:
        parse_alert_frame(json.dumps({"type": "price", "address": address, "price_usd": 1, "ts": 1795687290}))
    assert error.value.reason == "invalid address"
    with pytest.raises(FrameError) as error:
        pp(pp_create(mint=address))
    assert error.value.reason == "invalid mint"


def test_good_identifiers_pass_and_a_bad_username_becomes_none() -> None:
    for channel_id, expected in [(-1001234567890, "-1001234567890"), ("777000", "777000"), (" -1 ", "-1")]:
        event = parse_alert_frame(json.dumps(dict(CALL, channel={"id": channel_id})))
        assert isinstance(event, CallEvent) and event.channel.id == expected
    for username, expected in [
        ("alpha_calls_2", "alpha_calls_2"),
        ("@alphacalls", "alphacalls"),
        ("abcd", None),
        ("a" * 33, None),
        ("alpha=calls", None),
        ("alpha\ncalls", None),
        ("x" * 1024, None),
    ]:
        event = parse_alert_frame(json.dumps(dict(CALL, channel={"id": "-1", "username": username})))
        assert isinstance(event, CallEvent) and event.channel.username == expected
    assert parse_alert_frame(with_token(address=" " + ADDRESS + "\n")).token.address == ADDRESS  # type: ignore[union-attr]


def test_binary_junk_is_a_frame_error():
    with pytest.raises(FrameError):
        parse_alert_frame(b"\xff\xfe\x00junk")
    with pytest.raises(FrameError):
        parse_alert_frame("\x00\x01\x02\ufffd")
    with pytest.raises(FrameError):
        parse_alert_frame("[" * 100_000)  # deep nesting must not escape as RecursionError


# --- PumpPortal ---------------------------------------------------------------------------------


def test_create_becomes_a_create_event_priced_in_usd():
    event = pp(pp_create())
    assert isinstance(event, CreateEvent)
    token = event.token
    assert token.address == MINT
    assert token.name == "Moon Dog" and token.symbol == "MDOG"  # trailing spaces stripped
    assert math.isclose(token.market_cap_usd, 33.830382106244144 * SOL_USD)  # type: ignore[arg-type]
    assert math.isclose(token.price_usd, 32.999999999999986 / 975_454_545.454546 * SOL_USD)  # type: ignore[arg-type]
    assert token.image_url == "https://ipfs.io/ipfs/QmMoonDogMetadata"
    assert token.created_at == NOW and event.created_at == NOW
    assert event.source == "pumpportal" and event.received_at == 1.5
    assert event.key == f"create:{MINT}"


def test_without_a_sol_price_usd_figures_are_none_and_trades_are_skipped():
    event = pp(pp_create(), sol_usd=None)
    assert isinstance(event, CreateEvent)
    assert event.token.market_cap_usd is None and event.token.price_usd is None
    assert pp(pp_trade(), sol_usd=None) is None


def test_buy_and_sell_become_price_events():
    buy = pp(pp_trade("buy"))
    assert isinstance(buy, PriceEvent)
    assert buy.address == MINT and buy.source == "pumpportal" and buy.ts == NOW
    assert math.isclose(buy.price_usd, 0.25 / 4_265_342.503241 * SOL_USD)
    assert math.isclose(buy.market_cap_usd, 42.32146 * SOL_USD)  # type: ignore[arg-type]
    sell = pp(pp_trade("sell", solAmount=0.1, tokenAmount=2_000_000))
    assert isinstance(sell, PriceEvent)
    assert math.isclose(sell.price_usd, 0.1 / 2_000_000 * SOL_USD)


def test_integer_sol_amount_is_sol_unless_it_can_only_be_lamports():
    small = pp(pp_trade(solAmount=3, tokenAmount=3_000_000))
    assert math.isclose(small.price_usd, 1e-6 * SOL_USD)  # type: ignore[union-attr]
    lamports = pp(pp_trade(solAmount=3_000_000_000, tokenAmount=3_000_000))
    assert math.isclose(lamports.price_usd, small.price_usd)  # type: ignore[union-attr]
    assert sol_amount(3) == 3.0 and sol_amount("0.5") == 0.5
    assert sol_amount(1_000_000) == 1_000_000.0  # the boundary is still SOL
    assert sol_amount(2_500_000_000) == 2.5
    assert sol_amount(1_500_000.5) is None and sol_amount(0) is None and sol_amount("x") is None


def test_a_trade_without_amounts_is_priced_from_the_curve():
    event = pp(pp_trade(solAmount=None, tokenAmount=0))
    assert math.isclose(event.price_usd, 36.90981110863929 / 872_139_540.970454 * SOL_USD)  # type: ignore[union-attr]
    with_nothing = {k: v for k, v in pp_trade().items() if k not in ("solAmount", "tokenAmount")}
    with_nothing.pop("vSolInBondingCurve")
    assert pp(with_nothing) is None  # nothing to price with: skipped, not an error


def test_migrate_becomes_a_migrate_event():
    frame = pp_migrate()
    event = pp(frame)
    assert event == MigrateEvent(address=MINT, pool="pump-amm", ts=NOW, signature=frame["signature"])
    assert event.key == f"migrate:{MINT}:{frame['signature']}"


def test_bonk_frames_with_other_field_names_adapt():
    event = pp(pp_bonk_create())
    assert isinstance(event, CreateEvent)
    assert event.token.address == BONK_MINT and event.token.name == "Bonk Cat"
    price_sol = 0.992 / 965_739_053.104158
    assert math.isclose(event.token.price_usd, price_sol * SOL_USD)  # type: ignore[arg-type]
    # No marketCapSol: price times the fixed launchpad supply of one billion.
    assert math.isclose(event.token.market_cap_usd, price_sol * 1e9 * SOL_USD)  # type: ignore[arg-type]
    # "token" instead of "mint", and no txType at all: a creation.
    renamed = {("token" if k == "mint" else k): v for k, v in pp_bonk_create().items() if k != "txType"}
    assert pp(renamed).token.address == BONK_MINT  # type: ignore[union-attr]
    trade = pp(
        {
            "mint": BONK_MINT,
            "txType": "buy",
            "pool": "bonk",
            "solAmount": 1,
            "tokenAmount": 1e6,
            "solInPool": 5.0,
            "tokensInPool": 9e8,
        }
    )
    assert isinstance(trade, PriceEvent) and math.isclose(trade.price_usd, 1e-6 * SOL_USD)


def test_acknowledgements_and_refusals_are_notices():
    assert pp(ACK_NEW_TOKEN) == PumpPortalNotice("ack", ACK_NEW_TOKEN["message"])
    assert pp({"message": "Successfully subscribed to keys."}).kind == "ack"  # type: ignore[union-attr]
    for text in [
        "To subscribe to trades you must have an API key with a funded wallet.",
        "Please use an api-key to access this method",
        "Insufficient balance on your API key wallet",
        "apikey required",
    ]:
        assert classify_notice(text) == "refused", text
        assert pp({"message": text}).kind == "refused"  # type: ignore[union-attr]
    assert pp({"errors": "Unauthorized: invalid key"}).kind == "refused"  # type: ignore[union-attr]
    assert classify_notice("Not subscribed: missing API key") == "refused"
    assert classify_notice("Server restarting soon") == "info"
    assert pp({"hello": "there"}) is None  # an object we do not know is ignored


def test_pumpportal_malformed_frames_raise_frame_error():
    for text, reason in [
        ("{oops", "invalid JSON"),
        ("[]", "not a JSON object"),
        (json.dumps({"txType": "create", "name": "x"}), "missing mint"),
        (json.dumps({"txType": "buy", "mint": 7}), "invalid mint"),
    ]:
        with pytest.raises(FrameError) as error:
            parse_pumpportal_frame(text, SOL_USD, now=NOW)
        assert error.value.reason == reason
    assert pp({"txType": "swap", "mint": MINT}) is None  # a txType we do not use


def test_pumpportal_parser_reads_the_sol_price_at_each_frame():
    prices = iter([100.0, 200.0])
    parse = pumpportal_parser(lambda: next(prices))
    first = parse(json.dumps(pp_create()), 0.0)
    second = parse(json.dumps(pp_create()), 0.0)
    assert second.token.market_cap_usd == pytest.approx(2 * first.token.market_cap_usd)  # type: ignore[union-attr]


def test_pumpportal_url_adds_the_key_as_a_query_parameter():
    assert pumpportal_url("wss://pumpportal.fun/api/data", None) == "wss://pumpportal.fun/api/data"
    assert pumpportal_url("wss://pumpportal.fun/api/data", "a b") == "wss://pumpportal.fun/api/data?api-key=a%20b"
    assert pumpportal_url("ws://h/x?y=1", "k") == "ws://h/x?y=1&api-key=k"
