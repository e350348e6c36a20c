"""A deterministic sample of the alert feed: the frames the demo plays and the tests read.

Everything comes from one seeded ``random.Random`` and a fixed start time, never the wall clock,
so the same seed always gives the same frames, byte for byte. The committed sample
``data/feed_sample.jsonl`` is ``python -m standins.feedgen`` with the defaults.

What is in it, and why:

- ``channel`` frames for every channel at the start (a consumer knows each channel's statistics
  before its first call), and occasional updates later.
- ``call`` frames: each token is called by 1 to 8 channels at different times; later calls carry
  the token's market cap at that moment. Optional fields (``name``, ``liquidity_usd``,
  ``holders``, ``created_at``, the channel's ``username``) are sometimes missing or null.
- Hostile names and symbols (HTML, control characters, bidi overrides, a 300-character name,
  emoji, right-to-left text): whatever renders them must escape them.
- ``price`` frames along price paths: some tokens reach 2x, 5x or 10x+ of their first call's
  market cap within tens of minutes, some die (fall 90% or more). Market cap is always
  price x 1e9 (pump.fun's supply).
- A few frames of types the contract does not know (``hello``, ``heartbeat``): consumers must
  ignore them. There are no malformed frames here; tests make their own.

Ground truth for tests: ``summary(frames)`` and ``token_multiples(frames)``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

Frame = dict[str, Any]

START = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
SUPPLY = 1_000_000_000  # pump.fun mints 1e9 tokens, so market cap = price x 1e9
DEFAULT_SEED = 7
DEFAULT_TOKENS = 100
KNOWN_TYPES = frozenset({"call", "price", "channel"})
BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
SAMPLE_NAME = "feed_sample.jsonl"
SAMPLE_PATH = Path(__file__).resolve().parent / "data" / SAMPLE_NAME

# Fates of a token after its first call: (peak multiple range, minutes to the peak).
FATES: dict[str, tuple[tuple[float, float], tuple[int, int]]] = {
    "10x": ((10.0, 18.0), (20, 60)),
    "5x": ((5.0, 9.5), (15, 50)),
    "2x": ((2.0, 4.5), (10, 40)),
    "flat": ((1.05, 1.8), (5, 30)),
    "dies": ((1.0, 1.5), (2, 10)),
}
FATE_WEIGHTS = {"10x": 8, "5x": 10, "2x": 20, "flat": 37, "dies": 25}
MIN_PER_FATE = 3  # so even a small --tokens run shows every kind of path
# How many channels call one token (1..8), heavier on few.
CHANNELS_PER_TOKEN_WEIGHTS = [30, 20, 15, 10, 9, 7, 5, 4]

# (name, symbol) pairs a renderer must not trust; each goes to one token.
HOSTILE_NAMES: list[tuple[str, str]] = [
    ("<b>Bold Coin</b>", "<b>BOLD"),
    ("<script>alert(1)</script>", "XSS"),
    ("Tom &amp; Jerry & Friends", "T&J"),
    ('</a><a href="https://evil.example/">claim airdrop</a>', "</a>"),
    ("Null\x00Byte\x01Coin\x1f", "NUL\x00"),
    ("Bell\x07\x08\x0b\x0c\x1b[31mRed", "\x1b[0m"),
    ("\u202eexe.niocliave\u202c", "\u202eGSM"),
    (("Very Long Token Name " * 15)[:300], "LONG"),
    ("\U0001f680\U0001f438 Frog Rocket \U0001f315\U0001f525", "\U0001f438FROG"),
    ("\u0639\u0645\u0644\u0629 \u0627\u0644\u0642\u0645\u0631", "\u0642\u0645\u0631"),
    ("\u05de\u05d8\u05d1\u05e2 \u05d4\u05d9\u05e8\u05d7", "\u05d9\u05e8\u05d7"),
    ("Line\nBreak\tTab\r\n", "NL\n"),
    ("<i>it</i> & <u>u</u> <code>x</code> <pre>", "<>&\"'"),
    ("Z\u0335\u0322a\u0334l\u0337g\u0336o\u0338", "ZALGO"),
    ("@everyone /start https://t.me/+AbCdEf", "/start"),
]
PLAIN_TEXT = re.compile(r"[A-Za-z0-9 ]*")

WORDS = [
    "Cash",
    "Elon",
    "Pepe",
    "Doge",
    "Moon",
    "Frog",
    "Cat",
    "Based",
    "Giga",
    "Chad",
    "Sol",
    "Pump",
    "Bonk",
    "Wif",
    "Hat",
    "Mog",
    "Goat",
    "Degen",
    "Rocket",
    "Turbo",
    "Baby",
    "King",
    "Shiba",
    "Floki",
    "Neko",
    "Banana",
    "Sigma",
    "Lambo",
    "Wojak",
    "Cope",
    "Hodl",
    "Bull",
]
CHANNEL_NAMES = [
    "Alpha Calls",
    "Degen Den",
    "Moon Hunters",
    "Whale Watch",
    "Solana Gems",
    "Pump Radar",
    "Early Birds",
    "Insider Signals",
    "Gem Finder",
    "Ape Station",
    "Sniper Club",
    "100x Hunters",
    "Bonding Curve",
    "Lowcap Lounge",
    "Trench Reports",
    "Chad Calls",
    "Based Picks",
    "Sol Snipers",
    "Memecoin Mafia",
    "KOL Tracker",
    # Channel names end up in alerts too, so a few hostile ones.
    "<b>VIP</b> Calls & Co",
    "\u041a\u0430\u043d\u0430\u043b \u041b\u0443\u043d\u0430",
    "\u0642\u0646\u0627\u0629 \u0627\u0644\u0639\u0645\u0644\u0627\u062a",
    "\U0001f680 Rocket Room \U0001f680",
]
MISSING = object()  # marks a field left out of a frame (as opposed to null)


# --- small helpers ---------------------------------------------------------------------------


def iso(ts: datetime) -> str:
    """The feed's timestamp format: UTC, whole seconds, trailing Z."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as Solana writes public keys."""
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, rest = divmod(number, 58)
        digits.append(BASE58[rest])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        number = number * 58 + BASE58.index(char)
    leading_ones = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * leading_ones + body


def _b58value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 58 + BASE58.index(char)
    return value


_PUMP_VALUE = _b58value("pump")
_SUFFIX_MOD = 58**4


def make_address(rng: random.Random, *, pump: bool) -> str:
    """A real 32-byte key in base58 (43-44 characters).

    pump.fun grinds keys until the base58 text ends in "pump"; we build one instead: the last
    four base58 digits are the number mod 58**4. The top byte is non-zero, so there are no
    leading '1's and the text is 43 or 44 characters long.
    """
    low, high = 2**248, 2**256 - 1
    if pump:
        k = rng.randrange(-((_PUMP_VALUE - low) // _SUFFIX_MOD), (high - _PUMP_VALUE) // _SUFFIX_MOD + 1)
        number = k * _SUFFIX_MOD + _PUMP_VALUE
    else:
        number = rng.randrange(low, high + 1)
    return b58encode(number.to_bytes(32, "big"))


def _mcap_fields(mcap: float) -> tuple[float, float]:
    """(market cap, price), consistent: price x SUPPLY == market cap."""
    mcap = round(mcap, 2)
    return mcap, mcap / SUPPLY


def _maybe(rng: random.Random, value: Any, *, missing: float = 0.06, null: float = 0.04) -> Any:
    """Leave an optional field out, make it null, or keep it."""
    roll = rng.random()
    if roll < missing:
        return MISSING
    if roll < missing + null:
        return None
    return value


def _put(target: Frame, key: str, value: Any) -> None:
    if value is not MISSING:
        target[key] = value


# --- channels --------------------------------------------------------------------------------


@dataclass
class Channel:
    id: str
    name: str
    username: Any  # a string, None (sent as null) or MISSING (left out)
    win_rate: float
    avg_gain: float
    calls: int

    def ref(self) -> Frame:
        """The channel object inside a call frame."""
        ref: Frame = {"id": self.id, "name": self.name}
        _put(ref, "username", self.username)
        return ref

    def frame(self) -> Frame:
        frame: Frame = {"type": "channel", "id": self.id, "name": self.name}
        _put(frame, "username", self.username)
        frame.update(win_rate=self.win_rate, avg_gain=self.avg_gain, calls=self.calls)
        return frame


def _username(name: str) -> str:
    return "".join(c for c in name.lower() if c.isascii() and c.isalnum())


def make_channels(rng: random.Random) -> list[Channel]:
    count = len(CHANNEL_NAMES)
    # Win rates spread over 0..1 (both ends included), so win-rate filters have work to do.
    win_rates = [min(1.0, max(0.0, i / (count - 1) + rng.uniform(-0.03, 0.03))) for i in range(count)]
    win_rates[0], win_rates[-1] = 0.0, 1.0
    rng.shuffle(win_rates)
    channels: list[Channel] = []
    used_ids: set[str] = set()
    for index, name in enumerate(CHANNEL_NAMES):
        channel_id = f"-100{rng.randrange(10**9, 10**10)}"
        while channel_id in used_ids:
            channel_id = f"-100{rng.randrange(10**9, 10**10)}"
        used_ids.add(channel_id)
        # A few channels have no public username: null for some, absent for others.
        username: Any = (_username(name) or f"channel{index}") if index % 7 else MISSING
        if index % 11 == 5:
            username = None
        channels.append(
            Channel(
                id=channel_id,
                name=name,
                username=username,
                win_rate=round(win_rates[index], 2),
                avg_gain=round(math.exp(rng.uniform(math.log(0.4), math.log(12.0))), 2),
                calls=rng.randint(3, 900),
            )
        )
    return channels


def channel_update(rng: random.Random, channel: Channel, new_calls: int) -> Frame:
    """Drift a channel's statistics a little, as a stats service would after more calls."""
    channel.calls += new_calls
    channel.win_rate = round(min(1.0, max(0.0, channel.win_rate + rng.uniform(-0.04, 0.04))), 2)
    channel.avg_gain = round(max(0.1, channel.avg_gain * rng.uniform(0.9, 1.1)), 2)
    return channel.frame()


# --- tokens ----------------------------------------------------------------------------------


@dataclass
class Token:
    address: str
    name: str
    symbol: str
    fate: str
    created_at: datetime
    first_call: datetime
    start_mcap: float
    # (time, multiple of start_mcap) points the price path passes through.
    keypoints: list[tuple[datetime, float]] = field(default_factory=list)

    def multiple_at(self, when: datetime) -> float:
        """Geometric interpolation between keypoints (prices move in ratios, not steps)."""
        points = self.keypoints
        if when <= points[0][0]:
            return points[0][1]
        for (t1, m1), (t2, m2) in zip(points, points[1:]):
            if when <= t2:
                share = (when - t1) / (t2 - t1)
                return math.exp(math.log(m1) + share * (math.log(m2) - math.log(m1)))
        return points[-1][1]

    @property
    def peak(self) -> tuple[datetime, float]:
        return max(self.keypoints, key=lambda point: point[1])

    @property
    def end(self) -> datetime:
        return self.keypoints[-1][0]


def plain_name(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(WORDS, 2)
    return f"{first} {second}", (first + second).upper()[:10]


def choose_fates(rng: random.Random, count: int) -> list[str]:
    fates = [fate for _ in range(MIN_PER_FATE) for fate in FATES][:count]
    names, weights = list(FATE_WEIGHTS), list(FATE_WEIGHTS.values())
    fates += rng.choices(names, weights, k=count - len(fates))
    rng.shuffle(fates)
    return fates


def make_keypoints(rng: random.Random, fate: str, first_call: datetime) -> list[tuple[datetime, float]]:
    (peak_low, peak_high), (minutes_low, minutes_high) = FATES[fate]
    peak_at = first_call + timedelta(seconds=rng.randint(minutes_low * 60, minutes_high * 60))
    peak = round(rng.uniform(peak_low, peak_high), 3)
    end_at = peak_at + timedelta(seconds=rng.randint(10 * 60, 40 * 60))
    if fate == "dies":
        final = round(rng.uniform(0.02, 0.09), 3)  # a rug: 91-98% below the first call
    else:
        final = round(peak * rng.uniform(0.35, 0.85), 3)
    return [(first_call, 1.0), (peak_at, peak), (end_at, final)]


def make_tokens(rng: random.Random, count: int) -> list[Token]:
    fates = choose_fates(rng, count)
    hostile_slots = rng.sample(range(count), min(count, len(HOSTILE_NAMES)))
    hostile_for = {slot: HOSTILE_NAMES[i] for i, slot in enumerate(hostile_slots)}
    addresses: set[str] = set()
    tokens: list[Token] = []
    for index, fate in enumerate(fates):
        address = make_address(rng, pump=rng.random() < 0.85)
        while address in addresses:
            address = make_address(rng, pump=True)
        addresses.add(address)
        name, symbol = hostile_for.get(index) or plain_name(rng)
        first_call = START + timedelta(seconds=rng.randint(60, 180 * 60))
        # Created minutes to hours before its first call (log-uniform: most are young).
        age = int(math.exp(rng.uniform(math.log(60), math.log(8 * 3600))))
        # Start low enough that a 18x peak stays within ~5m USD.
        start_mcap = math.exp(rng.uniform(math.log(6_000), math.log(270_000)))
        tokens.append(
            Token(
                address=address,
                name=name,
                symbol=symbol,
                fate=fate,
                created_at=first_call - timedelta(seconds=age),
                first_call=first_call,
                start_mcap=start_mcap,
                keypoints=make_keypoints(rng, fate, first_call),
            )
        )
    return tokens


# --- frames ----------------------------------------------------------------------------------


def call_frame(rng: random.Random, token: Token, channel: Channel, when: datetime) -> Frame:
    mcap, price = _mcap_fields(token.start_mcap * token.multiple_at(when))
    body: Frame = {"address": token.address, "symbol": token.symbol}
    _put(body, "name", _maybe(rng, token.name))
    body.update(chain="solana", market_cap_usd=mcap)
    # On the bonding curve, liquidity is a share of market cap; holders grow with it.
    _put(body, "liquidity_usd", _maybe(rng, round(mcap * rng.uniform(0.12, 0.35), 2)))
    _put(body, "holders", _maybe(rng, int(15 + mcap / 1000 * rng.uniform(1.5, 4.0))))
    body["price_usd"] = price
    _put(body, "created_at", _maybe(rng, iso(token.created_at)))
    return {"type": "call", "token": body, "channel": channel.ref(), "called_at": iso(when)}


def price_frame(address: str, mcap: float, when: datetime) -> Frame:
    mcap, price = _mcap_fields(mcap)
    return {"type": "price", "address": address, "price_usd": price, "market_cap_usd": mcap, "ts": iso(when)}


def call_times(rng: random.Random, token: Token, count: int) -> list[datetime]:
    """The first call, then later ones while the token is still moving up (or just after)."""
    peak_at, _ = token.peak
    window_end = peak_at if token.fate == "dies" else peak_at + (token.end - peak_at) / 2
    window = max(30, int((window_end - token.first_call).total_seconds()))
    offsets = sorted(rng.randint(20, window) for _ in range(count - 1))
    return [token.first_call] + [token.first_call + timedelta(seconds=s) for s in offsets]


def price_path(rng: random.Random, token: Token) -> list[Frame]:
    """Price ticks every 1.5-7.5 minutes; the peak and the final point are hit exactly."""
    peak_at, peak = token.peak
    ticks: list[datetime] = []
    when = token.first_call
    while True:
        when += timedelta(seconds=rng.randint(90, 450))
        if when >= token.end:
            break
        ticks.append(when)
    ticks = sorted(set(ticks) | {peak_at, token.end})
    frames = []
    for tick in ticks:
        multiple = token.multiple_at(tick)
        if tick not in (peak_at, token.end):
            # Noise, but never above the peak, so the peak stays the ground truth.
            multiple = min(peak, multiple * math.exp(rng.uniform(-0.06, 0.06)))
        frames.append(price_frame(token.address, token.start_mcap * multiple, tick))
    return frames


def token_events(rng: random.Random, token: Token, channels: Sequence[Channel]) -> list[tuple[datetime, Frame]]:
    count = rng.choices(range(1, 9), CHANNELS_PER_TOKEN_WEIGHTS)[0]
    callers = rng.sample(list(channels), count)
    times = call_times(rng, token, count)
    events = [(when, call_frame(rng, token, channel, when)) for when, channel in zip(times, callers)]
    events += [(parse_ts(frame["ts"]), frame) for frame in price_path(rng, token)]
    return events


def channel_update_events(
    rng: random.Random, calls: list[tuple[datetime, Frame]], channels: Sequence[Channel]
) -> list[tuple[datetime, Frame]]:
    """Now and then, a channel's statistics are republished after one of its calls."""
    by_id = {channel.id: channel for channel in channels}
    since_update: Counter[str] = Counter()
    events = []
    for when, frame in calls:
        channel_id = frame["channel"]["id"]
        since_update[channel_id] += 1
        if rng.random() < 0.1:
            update = channel_update(rng, by_id[channel_id], since_update.pop(channel_id))
            events.append((when + timedelta(seconds=rng.randint(5, 120)), update))
    return events


def unknown_events(last: datetime) -> list[tuple[datetime, Frame]]:
    """Frames of types the contract does not define; consumers must skip them."""
    events: list[tuple[datetime, Frame]] = [(START, {"type": "hello", "feed": "feedgen", "version": 1})]
    when = START + timedelta(minutes=15)
    while when < last:
        events.append((when, {"type": "heartbeat", "ts": iso(when)}))
        when += timedelta(minutes=15)
    return events


def _in_time_order(events: list[tuple[datetime, Frame]]) -> list[tuple[datetime, Frame]]:
    # sorted() is stable: frames at the same second keep the order they were made in.
    return sorted(events, key=lambda event: event[0])


def generate(seed: int = DEFAULT_SEED, tokens: int = DEFAULT_TOKENS) -> list[Frame]:
    """The sample stream: a list of frames in time order."""
    rng = random.Random(seed)
    channels = make_channels(rng)
    opening = [(START, channel.frame()) for channel in channels]
    events: list[tuple[datetime, Frame]] = []
    for token in make_tokens(rng, tokens):
        events += token_events(rng, token, channels)
    events = _in_time_order(events)
    calls = [event for event in events if event[1]["type"] == "call"]
    events += channel_update_events(rng, calls, channels)
    events += unknown_events(max(when for when, _ in events))
    # Opening channel frames first, whatever else happens at START.
    return [frame for _, frame in opening + _in_time_order(events)]


# --- reading, writing, ground truth ----------------------------------------------------------


def dumps(frames: Iterable[Frame]) -> str:
    """JSON lines. ASCII only: bidi overrides and control characters stay visible as escapes
    in the committed file (no "trojan source" surprises in diffs), and the bytes never depend
    on the platform's encoding."""
    return "".join(json.dumps(frame, ensure_ascii=True) + "\n" for frame in frames)


def loads(text: str) -> list[Frame]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_sample() -> list[Frame]:
    """The committed sample (seed 7, default token count)."""
    resource = resources.files(__package__ or "standins").joinpath("data", SAMPLE_NAME)
    return loads(resource.read_text(encoding="utf-8"))


def frame_time(frame: Frame) -> str | None:
    """A frame's timestamp, whatever its type (channel frames have none)."""
    return frame.get("called_at") or frame.get("ts")


def is_hostile(text: str | None) -> bool:
    """Anything beyond ASCII letters, digits and spaces, or very long: true of every entry in
    HOSTILE_NAMES and of no generated plain name."""
    if not text:
        return False
    return PLAIN_TEXT.fullmatch(text) is None or len(text) >= 300


def token_multiples(frames: Iterable[Frame]) -> dict[str, tuple[float, float]]:
    """address -> (highest, lowest) market cap after the first call, as multiples of the first
    call's market cap (later calls count too)."""
    first: dict[str, float] = {}
    highest: dict[str, float] = {}
    lowest: dict[str, float] = {}
    for frame in frames:
        if frame.get("type") == "call":
            address, mcap = frame["token"]["address"], frame["token"]["market_cap_usd"]
        elif frame.get("type") == "price":
            address, mcap = frame["address"], frame["market_cap_usd"]
        else:
            continue
        if address not in first:
            if frame["type"] != "call":
                continue  # a price before any call is nobody's alert yet
            first[address] = mcap
        highest[address] = max(highest.get(address, mcap), mcap)
        lowest[address] = min(lowest.get(address, mcap), mcap)
    return {a: (highest[a] / first[a], lowest[a] / first[a]) for a in first}


def summary(frames: Sequence[Frame]) -> dict[str, Any]:
    """Ground truth about a stream, for tests and for the command line."""
    types = Counter(str(frame.get("type")) for frame in frames)
    calls = [frame for frame in frames if frame.get("type") == "call"]
    callers: dict[str, set[str]] = {}
    hostile: set[str] = set()
    for frame in calls:
        token = frame["token"]
        callers.setdefault(token["address"], set()).add(frame["channel"]["id"])
        if is_hostile(token.get("name")) or is_hostile(token.get("symbol")):
            hostile.add(token["address"])
    per_token = Counter(len(ids) for ids in callers.values())
    multiples = token_multiples(frames)
    times = [t for t in map(frame_time, frames) if t]
    return {
        "frames": len(frames),
        "types": dict(sorted(types.items())),
        "unknown_frames": sum(n for kind, n in types.items() if kind not in KNOWN_TYPES),
        "channels": len({frame["id"] for frame in frames if frame.get("type") == "channel"}),
        "tokens": len(callers),
        "calls": len(calls),
        "max_channels_per_token": max(per_token, default=0),
        "tokens_by_channel_count": dict(sorted(per_token.items())),
        "tokens_2x": sum(1 for high, _ in multiples.values() if high >= 2),
        "tokens_5x": sum(1 for high, _ in multiples.values() if high >= 5),
        "tokens_10x": sum(1 for high, _ in multiples.values() if high >= 10),
        "tokens_died": sum(1 for _, low in multiples.values() if low <= 0.1),
        "hostile_tokens": len(hostile),
        "first_ts": min(times, default=None),
        "last_ts": max(times, default=None),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m standins.feedgen", description="Write a deterministic alert-feed sample."
    )
    parser.add_argument("--out", default=str(SAMPLE_PATH), help="JSON lines file to write ('-': stdout)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS)
    args = parser.parse_args(argv)
    if args.tokens < 1:
        parser.error("--tokens must be at least 1")
    frames = generate(seed=args.seed, tokens=args.tokens)
    text = dumps(frames)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(text.encode("ascii"))
    print(json.dumps(summary(frames)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def _shifted(value: Any, delta: timedelta) -> Any:
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return (moment + delta).isoformat().replace("+00:00", "Z")


def ending_at(frames: list[Frame], end: datetime) -> list[Frame]:
    """The frames with every time moved by one amount so the last happens at `end`: the recording
    replayed as if it had just been made (call, price and token creation times alike)."""
    times = [datetime.fromisoformat(t.replace("Z", "+00:00")) for f in frames if (t := frame_time(f))]
    if not times:
        return list(frames)
    delta = end - max(times)
    moved: list[Frame] = []
    for frame in frames:
        copy = dict(frame)
        for key in ("called_at", "ts"):
            if key in copy:
                copy[key] = _shifted(copy[key], delta)
        if isinstance(copy.get("token"), dict):
            token = dict(copy["token"])
            if "created_at" in token:
                token["created_at"] = _shifted(token["created_at"], delta)
            copy["token"] = token
        moved.append(copy)
    return moved
