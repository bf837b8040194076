"""A deterministic mutation fuzz of every door (tests/unit/test_door_fuzz_*.py).

Each door of calstream takes something another party wrote: a record of a
topic, a file. The fuzz starts from a valid one, mutates it (types swapped,
numbers huge, negative or not numbers at all, NaN and Infinity, very long
texts, NUL, control characters, lone surrogates and bytes that are not UTF-8,
paths that leave their root, keys duplicated, missing or added, the bytes cut
every few bytes, nesting deep; for a door that is a directory, the file's
name too: ``mutated_name``), and hands each mutant to the code the door
runs. The property: the mutant is taken as a valid thing or refused with a
reason -- never another exception, never a hang, never a path outside its
root -- and the valid input given right after it is still decided as
before (a mutant leaves no state behind that breaks the next one).

Seeded: a failure names its door, seed and case, and comes back with them.
The unit tests run a few hundred mutants a door; to run longer, by hand:

    CALSTREAM_FUZZ_CASES=20000 CALSTREAM_FUZZ_SEED=7 \\
        .venv/bin/python -m pytest -q tests/unit/test_door_fuzz_*.py -p no:cacheprovider

(CALSTREAM_FUZZ_CASES: mutants per door; CALSTREAM_FUZZ_SEED: where to start.)
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any


def budget(default: int) -> int:
    """Mutants per door: ``default`` unless CALSTREAM_FUZZ_CASES says more."""
    return int(os.environ.get("CALSTREAM_FUZZ_CASES") or default)


def first_seed() -> int:
    return int(os.environ.get("CALSTREAM_FUZZ_SEED") or 0)


class Hang(Exception):
    """A case that did not end within its bound: a hang, not a slow case."""


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """Raise Hang in the block after ``seconds`` (a bound on a hang, far
    above any case's time: not a timed assertion)."""
    def expired(signum, frame):
        raise Hang(f"no end after {seconds} s")

    # The test's own time-out (pytest-timeout) may use the same timer: it
    # is given back what is left of it.
    previous = signal.signal(signal.SIGALRM, expired)
    left, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if left:
            signal.setitimer(signal.ITIMER_REAL,
                             max(left - (time.monotonic() - start), 0.001), interval)


# -- values a forger puts where a value goes ------------------------------

TEXTS = ["", " ", ".", "..", "../../../etc/passwd", "/etc/passwd", "/", "a/../../b", "~",
         "x\x00y", "\x00", "\n", "a\nFAKE LOG LINE", "\x1b[31mred", "\r", "\t", "\x7f",
         "\ud800", "\udcff", "a\udc80b", "\u202egnp.x", "\ufeff", "\u00e9\u4e2d", "nan", "NaN",
         "inf", "-1", "0", "1e400", "true", "null", "{}", "[]", "%s%n", "\\", "$HOME",
         "PLANNED", "CALCULATED", "live", "current", "jwst_0001.pmap", "2026-01-01T00:00:00Z",
         "2026-13-45T25:61:00Z", "sha256:" + "0" * 64, "jw01234001001_02101_00001_nrcb1",
         "jw01234001001_02101_00001_nrcb1/../x"]
NUMBERS = [0, -1, 1, 2, 2**31, 2**63, -2**63, 10**18, 10**29, -10**29, 10**40, 1.5, -0.0,
           1e308, -1e308, 5e-324, float("nan"), float("inf"), float("-inf")]
OTHERS = [None, True, False, [], {}, [None], {"": None}, [[[]]], {"a": {"b": {"c": 1}}}]


def spots(value: Any, prefix: tuple = (), depth: int = 14) -> Iterator[tuple]:
    """Every place in a JSON value, down to ``depth``."""
    if len(prefix) >= depth:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) \
        if isinstance(value, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from spots(v, prefix + (k,), depth)


def get(value: Any, spot: tuple) -> Any:
    for k in spot:
        value = value[k]
    return value


def _set(value: Any, spot: tuple, new: Any) -> None:
    get(value, spot[:-1])[spot[-1]] = new


def holders_exist(body: Any, places: list[tuple]) -> bool:
    return isinstance(body, dict) or any(isinstance(get(body, s), dict) for s in places)


def nested(depth: int, inner: Any = "x") -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


def swapped(value: Any, rng: random.Random) -> Any:
    """``value`` as another JSON type that says the same, or nearly."""
    if isinstance(value, bool):
        return rng.choice([int(value), str(value).lower(), None, [value]])
    if isinstance(value, int):
        return rng.choice([str(value), float(value), -value, value * 10**20, [value], None,
                           bool(value), {"value": value}])
    if isinstance(value, float):
        return rng.choice([str(value), int(value) if value == value and abs(value) < 1e300
                           else 0, None, [value]])
    if isinstance(value, str):
        number = [int(value)] if re.fullmatch(r"-?[0-9]{1,30}", value) else []
        return rng.choice([*number, len(value), None, [value], {"value": value}, value.encode(
            "utf-8", "surrogatepass").hex(), True])
    if isinstance(value, list):
        return rng.choice([value[0] if value else None, {str(i): v for i, v in enumerate(value)},
                           json.dumps(value), None, [value]])
    if isinstance(value, dict):
        return rng.choice([list(value.values()), list(value.items()), json.dumps(value), None,
                           [value]])
    return rng.choice(TEXTS)


def _text_made_wrong(text: str, rng: random.Random, paths: list[str]) -> str:
    form = rng.choice(["@\n", "../@", "@/..", "@/../../../x", "/@", ".@", "@ ", "@\x00",
                       "@\ud800", "\x1b[2J@", "@" * 50, "@" + "a" * 5000])
    if "/" in text and paths and rng.random() < 0.5:
        return rng.choice(paths)
    return form.replace("@", text)


def mutated_value(body: Any, rng: random.Random, *, paths: list[str] = (),
                  keys: list[str] = ()) -> Any:
    """A copy of ``body`` with one to three things changed."""
    body = copy.deepcopy(body)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        places = list(spots(body))
        if not places:
            return swapped(body, rng)
        spot = rng.choice(places)
        old = get(body, spot)
        how = rng.random()
        if how < 0.2:
            _set(body, spot, swapped(old, rng))
        elif how < 0.3:
            _set(body, spot, copy.deepcopy(rng.choice(TEXTS + NUMBERS + OTHERS)))
        elif how < 0.4 and isinstance(get(body, spot[:-1]), dict):
            del get(body, spot[:-1])[spot[-1]]
        elif how < 0.5 and holders_exist(body, places):  # a key added: the door's own names too
            holders = [()] * isinstance(body, dict) + [
                s for s in places if isinstance(get(body, s), dict)]
            holder = get(body, rng.choice(holders))
            name = rng.choice([*keys, *(k for k in holder), "x", "", "\ud800", "a" * 300])
            holder[name] = copy.deepcopy(rng.choice(TEXTS + NUMBERS + OTHERS))
        elif how < 0.6:
            texts = [s for s in places if isinstance(get(body, s), str)]
            if texts:
                spot = rng.choice(texts)
                _set(body, spot, _text_made_wrong(get(body, spot), rng, list(paths)))
        elif how < 0.68:
            numbers = [s for s in places if type(get(body, s)) in (int, float)]
            if numbers:
                _set(body, rng.choice(numbers), rng.choice(NUMBERS))
        elif how < 0.74:
            _set(body, spot, nested(rng.choice([30, 200, 600]), old))  # deeper: in bytes
        elif how < 0.8:
            _set(body, spot, "x" * rng.choice([1000, 70_000, 1_100_000]))
        elif how < 0.88 and isinstance(old, list) and old:
            old.append(copy.deepcopy(rng.choice(old)) if rng.random() < 0.5 else
                       copy.deepcopy(rng.choice(TEXTS + NUMBERS + OTHERS)))
        else:
            _set(body, spot, swapped(old, rng))
    return body


def encoded(value: Any, rng: random.Random) -> bytes:
    """A value as JSON bytes the way a careless writer makes them: NaN and
    Infinity left in, lone surrogates written raw (bytes that are not UTF-8)
    or escaped, spaces or none."""
    compact = rng.random() < 0.5
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, allow_nan=True,
                      separators=(",", ":") if compact else None)
    return text.encode("utf-8", "surrogatepass")


# -- bytes a forger sends ---------------------------------------------------

_NUMBER = re.compile(rb"(?<=[:\[,])-?[0-9][0-9.eE+-]*")
_KEY = re.compile(rb'"([A-Za-z_][A-Za-z0-9_]*)":')
INSERTS = [b"\x00", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x1b", b"\n", b'"', b",", b"}", b"]",
           b"\\", b"\\u", b"\\ud800", b"\xef\xbb\xbf", b" " * 1000]


def mutated_bytes(raw: bytes, rng: random.Random) -> bytes:
    how = rng.random()
    if how < 0.2 or len(raw) < 2:  # cut anywhere, or at a chosen few bytes
        return raw[:rng.randrange(len(raw) + 1)]
    if how < 0.35:
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + rng.choice(INSERTS) + raw[at:]
    if how < 0.45:
        at = rng.randrange(len(raw))
        return raw[:at] + bytes([raw[at] ^ (1 << rng.randrange(8))]) + raw[at + 1:]
    if how < 0.6:
        numbers = list(_NUMBER.finditer(raw))
        if numbers:
            m = rng.choice(numbers)
            new = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999",
                              b"9" * 31, b"9" * 5000, b"-0", b"0.0", b"1E2", b"00"])
            return raw[:m.start()] + new + raw[m.end():]
    if how < 0.75:  # a key twice: the first with another value, or the same
        keys = list(_KEY.finditer(raw))
        if keys:
            m = rng.choice(keys)
            value = rng.choice([b'"x"', b"1", b"null", b"[]", b"{}", b'"../x"'])
            return raw[:m.start()] + m.group(0) + value + b"," + raw[m.start():]
    if how < 0.85:
        depth = rng.choice([50, 2000, 200_000])
        return raw[:1] + b'"deep":' + b"[" * depth + b"]" * depth + b"," + raw[1:] \
            if raw.startswith(b"{") else b"[" * depth + raw + b"]" * depth
    return rng.choice([raw + raw, raw + b"x", b" \n" + raw, raw.replace(b":", b": ", 3),
                       raw.decode("latin-1").encode("utf-16"), b"", raw * 2000])


# -- names a person or a broken disk leaves in a directory -------------------

def mutated_name(name: str, rng: random.Random) -> str:
    """``name`` (``<stem>.<ext>``) as it is, or as a copy, a backup, an
    editor's swap file, a torn or forged name makes it: a name a file can
    have (no "/", no NUL, at most 255 bytes)."""
    if rng.random() < 0.35:
        return name
    stem, _, ext = name.rpartition(".")
    return rng.choice([
        f"{stem}.{ext.upper()}", stem, f"{name}.bak", f"{name}~", f".{name}", f".{name}.swp",
        f".{name}.123.tmp", f"{name}.unreadable-20260101T000000Z", f"{stem} (1).{ext}",
        f"{stem[:len(stem) // 2]}.{ext}", f"{stem.upper()}.{ext}", f"-{name}", f"_{name}",
        f"{stem}\n.{ext}", f"{stem}\x1b[2J.{ext}", f"{stem}\udcff.{ext}", f"{stem}\u00e9.{ext}",
        f"{stem} .{ext}", f" {name}", f".{ext}", f"..{ext}", f"{name}.{ext}", f"{stem}\t.{ext}",
        f"{'a' * 240}.{ext}", f"{stem}.{ext}\n", f"{stem}.{ext}.", f"{stem}..{ext}",
        "...", f"{stem[1:]}.{ext}", f"{stem}x.{ext}"])


def mutants(valid: Any, rng: random.Random, *, paths: list[str] = (),
            keys: list[str] = ()) -> Iterator[bytes]:
    """Bytes without end: half value mutants written out, half byte mutants
    of the valid text (``valid``: a JSON value)."""
    raw = encoded(valid, random.Random(0))
    while True:
        if rng.random() < 0.55:
            try:
                yield encoded(mutated_value(valid, rng, paths=paths, keys=keys), rng)
                continue
            except RecursionError:  # nested deeper than json.dumps writes: in bytes then
                pass
        yield mutated_bytes(raw, rng)


def fuzz(door: str, valid: Any, take: Callable[[bytes], str], *, cases: int, seed: int,
         after: Callable[[], None] | None = None, paths: list[str] = (),
         keys: list[str] = (), limit: float = 60.0) -> dict[str, int]:
    """Feed ``cases`` mutants of ``valid`` to ``take`` (the door: it returns
    what became of the input, e.g. "accepted" or "refused", and asserts
    whatever else must hold); after each, ``after`` (the valid input again,
    checked). Returns the count of each outcome. A mutant that makes either
    raise is reported with what reproduces it."""
    rng = random.Random(f"{door}:{seed}")
    counts: dict[str, int] = {}
    source = mutants(valid, rng, paths=paths, keys=keys)
    for case in range(cases):
        raw = next(source)
        try:
            with bounded(limit):
                outcome = take(raw)
                if after is not None:
                    after()
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            shown = raw[:300] + (b"..." if len(raw) > 300 else b"")
            raise AssertionError(f"door {door}, seed {seed}, case {case}: "
                                 f"{type(exc).__name__}: {str(exc)[:500]}\nmutant "
                                 f"({len(raw)} bytes): {shown!r}") from exc
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts
