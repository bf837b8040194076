"""Reading FITS headers block by block, without astropy and without the data.

What `fitsfile` needs to walk a file that may still be arriving: read one
header's 2880-byte blocks up to its END card, keep the keywords astropy
makes an HDU from (BITPIX, NAXISn, PCOUNT, GCOUNT, XTENSION, EXTNAME, the
pixels' scaling, ...), each written once and well formed, as jwst's reader
needs them, and compute how many data bytes the header declares. Anything
that stops the walk raises `WalkStopped`, with the status the file has and
the size it must reach.
"""

from __future__ import annotations

import enum
import math
import re
from pathlib import Path

from astropy.io import fits

BLOCK = 2880
CARD = 80
CARDS_PER_BLOCK = BLOCK // CARD

SIMPLE = b"SIMPLE  =                    T"
XTENSION = b"XTENSION="
_NOT_TEXT = re.compile(rb"[^\x20-\x7e]")
# A header that never ends is garbage; bound the walk so a large non-FITS
# file that happens to start like one is not read to the end. 1,000 blocks
# (2.9 MB, 36,000 cards) is a hundred times a JWST uncal's primary header.
# It was 10,000: a 24 MB file whose primary header had 324,000 cards passed
# the door, and astropy's parse of it took 2.5 s of the daemon's CPU and
# ~300 MB of its memory (four files at once, over a GB); at this bound
# ~30 MB (tests/unit/test_header_bounds.py).
_MAX_HEADER_BLOCKS = 1_000


# The keywords the walk keeps: those astropy reads to make an HDU as it
# opens a file (the structure, the name, the pixels' scaling and blank, the
# version, whether extensions follow). Each must be well formed here, or
# the file is corrupt: the walk would accept a file jwst cannot open.
_STRUCTURAL = frozenset({"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT", "GROUPS",
                         "EXTNAME", "BZERO", "BSCALE", "EXTEND", "BLANK", "EXTVER", "TFIELDS",
                         "ZNAXIS"})
# Values kept as text; the others as written, so that a number in quotes
# ('16'), which a reader takes for text, is no number here either.
_TEXTS = frozenset({"XTENSION", "EXTNAME"})


class FitsStatus(enum.Enum):
    COMPLETE = "complete"
    INCOMPLETE = "incomplete"  # shorter than declared: still being written, or truncated
    NOT_FITS = "not-fits"  # does not start with SIMPLE = T
    CORRUPT = "corrupt"  # starts like FITS, but a header is malformed


class WalkStopped(Exception):
    """Why a header walk cannot go on: the file's status, the reason, and the
    smallest size the file must have."""

    def __init__(self, status: FitsStatus, reason: str, expected: int) -> None:
        super().__init__(reason)
        self.status, self.reason, self.expected = status, reason, expected


# A string value (FITS 4.2.1): in quotes, '' for a quote inside, then only
# spaces or a comment. Anything else after the closing quote makes the card
# one astropy cannot parse (it reads the HDU as corrupted, or refuses it).
_STRING = re.compile(r" *'((?:[^']|'')*)' *(/.*)?")


def card_text(card: bytes) -> str | None:
    """The string value of a card, trailing spaces dropped (they are not
    significant); None if the card holds no well-formed string."""
    found = _STRING.fullmatch(card[10:].decode("ascii"))
    return None if found is None else found.group(1).replace("''", "'").rstrip()


def raw_value(card: bytes) -> str:
    """The value field of a card as written, comment removed: a number's
    text, or a quoted string with its quotes (which is no number)."""
    return card[10:].decode("ascii").split("/", 1)[0].strip()


def read_header(f, offset: int, size: int, index: int) -> tuple[bytes, dict[str, str]]:
    """Read one header starting at ``offset``; return its bytes and values of
    the structural keywords. Raises WalkStopped when it cannot."""
    keys: dict[str, str] = {}
    raw = bytearray()
    what = "primary header" if index == 0 else f"header of HDU {index}"
    for nblock in range(_MAX_HEADER_BLOCKS):
        start = offset + nblock * BLOCK
        f.seek(start)
        block = f.read(BLOCK)
        for i in range(0, len(block) - len(block) % CARD, CARD):
            card = block[i : i + CARD]
            if card.count(0) == CARD:
                # NULs where cards belong: preallocated space not yet filled.
                raise WalkStopped(
                    FitsStatus.INCOMPLETE,
                    f"{what} is unwritten (NUL bytes at offset {start + i}) before its END card",
                    start + BLOCK,
                )
            if _NOT_TEXT.search(card):
                raise WalkStopped(
                    FitsStatus.CORRUPT,
                    f"{what} has a non-ASCII card at offset {start + i}",
                    start + BLOCK,
                )
            keyword = card[:8].rstrip().decode("ascii")
            if keyword == "END" and card[3:].strip():
                # FITS 4.4.1: END and spaces. astropy reads on past a card
                # like "END     = 'sci '", into the next HDU's cards.
                raise WalkStopped(
                    FitsStatus.CORRUPT,
                    f"{what} has an END card with more on it at offset {start + i}",
                    start + BLOCK,
                )
            if keyword == "END":
                if len(block) < BLOCK:
                    raise WalkStopped(
                        FitsStatus.INCOMPLETE,
                        f"{what} has its END card but its last block is "
                        f"{BLOCK - len(block)} bytes short (file is {size} bytes)",
                        start + BLOCK,
                    )
                raw += block
                return bytes(raw), keys
            if card[8:10] == b"= " and (
                keyword in _STRUCTURAL
                or (keyword.startswith("NAXIS") and keyword[5:].isdigit())
            ):
                if keyword in keys:
                    # Which card counts is then the reader's choice: astropy's
                    # header gives the first NAXISn, its data the shape of the
                    # last, so the walk would size one array and jwst read another.
                    raise WalkStopped(
                        FitsStatus.CORRUPT,
                        f"{what} declares {keyword} twice (FITS: a keyword appears once)",
                        start + BLOCK,
                    )
                value = card_text(card) if keyword in _TEXTS else raw_value(card)
                if value is None:
                    raise WalkStopped(
                        FitsStatus.CORRUPT,
                        f"{what} has a {keyword} card that holds no string in quotes: "
                        f"{card[10:50].decode('ascii').rstrip()!r}",
                        start + BLOCK,
                    )
                keys[keyword] = value
        if len(block) < BLOCK:
            got = max(0, len(block))
            raise WalkStopped(
                FitsStatus.INCOMPLETE,
                f"{what} ends after {nblock * BLOCK + got} bytes without an END card "
                f"(file is {size} bytes)",
                start + BLOCK,
            )
        raw += block
    raise WalkStopped(
        FitsStatus.CORRUPT,
        f"{what} has no END card in its first {_MAX_HEADER_BLOCKS} blocks",
        offset + _MAX_HEADER_BLOCKS * BLOCK,
    )


# A FITS integer (4.2.3): Python's int() also takes "1_6", which no FITS
# reader does.
_INTEGER = re.compile(r"[+-]?[0-9]+")
# A FITS real (4.2.4) as a card writes it: D is an exponent too.
_REAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([EeDd][+-]?[0-9]+)?")


def _scaling_problem(bzero: str | None, bscale: str | None) -> str | None:
    """Why BZERO or BSCALE (their values as the cards write them, None where
    absent) cannot scale an array's pixels; None if they can.

    A reader computes ``BSCALE * stored + BZERO``: text (a quoted number, T)
    fails the read in jwst's first step, NaN or infinity makes every pixel
    one, and BSCALE = 0 makes them all BZERO."""
    for key, text in (("BZERO", bzero), ("BSCALE", bscale)):
        if text is None:
            continue
        if not _REAL.fullmatch(text):
            return f"{key} = {text[:40]} is not a number"
        value = float(text.replace("D", "E").replace("d", "e"))
        if not math.isfinite(value) or (key == "BSCALE" and value == 0):
            return f"{key} = {text[:40]} cannot scale pixels"
    return None


def check_values(keys: dict[str, str], index: int, end: int) -> None:
    """Raise WalkStopped (corrupt) for a kept card astropy could not read,
    beyond the sizes declared_data_size reads: a scaling, a blank or a
    version that is no number, a logical that is neither T nor F."""
    what = "primary header" if index == 0 else f"header of HDU {index}"
    problem = _scaling_problem(keys.get("BZERO"), keys.get("BSCALE"))
    for key in ("BLANK", "EXTVER", "PCOUNT", "GCOUNT"):  # the last two: a primary's too
        if problem is None and key in keys and not _INTEGER.fullmatch(keys[key]):
            problem = f"{key} = {keys[key][:40]} is not an integer"
    for key in ("EXTEND", "GROUPS"):
        if problem is None and keys.get(key, "T") not in ("T", "F"):
            problem = f"{key} = {keys[key][:40]} is neither T nor F"
    for key in ("TFIELDS", "ZNAXIS"):  # a table's columns, a compressed image's axes
        # FITS allows 999 of each; astropy loops over as many as declared
        # as it opens the table (TFIELDS = 99999999 held it for minutes).
        if problem is None and key in keys and not (
                _INTEGER.fullmatch(keys[key]) and 0 <= int(keys[key]) <= 999):
            problem = f"{key} = {keys[key][:40]} is not an integer of 0 to 999"
    if problem:
        raise WalkStopped(FitsStatus.CORRUPT, f"{what}: {problem}", end)


def _int_key(keys: dict[str, str], name: str, what: str, end: int, minimum: int = 0) -> int:
    if name not in keys:
        raise WalkStopped(FitsStatus.CORRUPT, f"{what} lacks mandatory keyword {name}", end)
    if not _INTEGER.fullmatch(keys[name]):
        raise WalkStopped(
            FitsStatus.CORRUPT, f"{what} has a non-integer {name} = {keys[name][:40]!r}", end
        )
    value = int(keys[name])
    if value < minimum:
        raise WalkStopped(FitsStatus.CORRUPT, f"{what} has {name} = {value} (< {minimum})", end)
    return value


def declared_data_size(keys: dict[str, str], index: int, end: int) -> int:
    """Bytes of data declared by a header (FITS 4.0, eqs. 1, 2 and 4)."""
    what = "primary header" if index == 0 else f"header of HDU {index}"
    bitpix = _int_key(keys, "BITPIX", what, end, minimum=-64)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise WalkStopped(FitsStatus.CORRUPT, f"{what} has an invalid BITPIX = {bitpix}", end)
    naxis = _int_key(keys, "NAXIS", what, end)
    if naxis > 999:
        raise WalkStopped(FitsStatus.CORRUPT, f"{what} has NAXIS = {naxis} (> 999)", end)
    axes = [_int_key(keys, f"NAXIS{i}", what, end) for i in range(1, naxis + 1)]
    if index == 0:
        pcount, gcount = 0, 1
        if naxis and axes[0] == 0 and keys.get("GROUPS") == "T":
            # Random groups: NAXIS1 = 0 is a marker, not an empty axis.
            pcount = _int_key(keys, "PCOUNT", what, end) if "PCOUNT" in keys else 0
            gcount = _int_key(keys, "GCOUNT", what, end) if "GCOUNT" in keys else 1
            axes = axes[1:]
    else:
        pcount = _int_key(keys, "PCOUNT", what, end)
        gcount = _int_key(keys, "GCOUNT", what, end)
    if naxis == 0 or not axes:
        return 0
    n = 1
    for a in axes:
        n *= a
    return abs(bitpix) // 8 * gcount * (pcount + n)


def parse_primary_header(raw: bytes, path: Path) -> fits.Header:
    try:
        return fits.Header.fromstring(raw.decode("ascii"))
    except Exception as exc:  # astropy raises several types for malformed cards
        raise WalkStopped(
            FitsStatus.CORRUPT, f"primary header cannot be parsed: {exc}", len(raw)
        ) from exc
