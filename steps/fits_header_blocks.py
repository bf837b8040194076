"""Reading FITS headers block by block, without astropy and without the data.

What `fitsfile` needs to walk a file that may still be arriving: read one
header's 2880-byte blocks up to its END card, keep the structural keywords
(BITPIX, NAXISn, PCOUNT, GCOUNT, XTENSION, EXTNAME), and compute how many
data bytes the header declares. Anything that stops the walk raises
`WalkStopped`, with the status the file has and the size it must reach.
"""

from __future__ import annotations

import enum
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
# file that happens to start like one is not read to the end. 10,000 blocks
# (28.8 MB, 360,000 cards) is far beyond any real header.
_MAX_HEADER_BLOCKS = 10_000


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


def card_value(card: bytes) -> str:
    """The value field of a fixed- or free-format card, comment removed."""
    text = card[10:].decode("ascii")
    if text.lstrip().startswith("'"):
        # Strings may contain '/', and '' is an escaped quote.
        body = text.lstrip()[1:]
        out, i = [], 0
        while i < len(body):
            if body[i] == "'":
                if body[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                break
            out.append(body[i])
            i += 1
        return "".join(out).rstrip()
    return text.split("/", 1)[0].strip()


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
                keyword in ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "PCOUNT", "GCOUNT")
                or keyword in ("GROUPS", "EXTNAME")
                or (keyword.startswith("NAXIS") and keyword[5:].isdigit())
            ):
                keys.setdefault(keyword, card_value(card))
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


def _int_key(keys: dict[str, str], name: str, what: str, end: int, minimum: int = 0) -> int:
    try:
        value = int(keys[name])
    except KeyError:
        raise WalkStopped(FitsStatus.CORRUPT, f"{what} lacks mandatory keyword {name}", end) from None
    except ValueError:
        raise WalkStopped(
            FitsStatus.CORRUPT, f"{what} has a non-integer {name} = {keys[name]!r}", end
        ) from None
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
