"""Structural checks on FITS files that never read pixel data.

A watcher must decide whether a file that is still on its way is complete.
Size and mtime only say that nothing changed lately; a downlink that copies
in pieces can pause for longer than any settle time. What the file declares
about itself is the reliable answer: every HDU's header states how many data
bytes follow it (FITS 4.0, section 4.4.1), so walking the headers and
seeking over the data gives the size the file must have once written.

Completeness rule: the file is complete when every header is terminated by
END and the last HDU's data *including its padding to 2880 bytes* is
present. The FITS standard requires that padding, and astropy and the JWST
ground system always write it. A writer that has written the data but not
yet the padding is indistinguishable from a non-conforming writer, and
announcing it early would make the same exposure appear twice with two
digests (once before, once after the padding lands), so missing padding is
reported as incomplete, with its own reason, unless the caller opts in with
``allow_unpadded_end=True``.

Bytes after the last HDU are allowed by the standard ("special records") and
ignored, with two exceptions that mean "still being written": the start of
an ``XTENSION`` card, or NUL bytes (space preallocated by the writer).
"""

from __future__ import annotations

import enum
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from astropy.io import fits

BLOCK = 2880
CARD = 80
CARDS_PER_BLOCK = BLOCK // CARD

_SIMPLE = b"SIMPLE  =                    T"
_XTENSION = b"XTENSION="
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


class FitsError(ValueError):
    """A file that cannot be used as FITS; ``status`` says why."""

    status: FitsStatus = FitsStatus.CORRUPT


class NotFits(FitsError):
    status = FitsStatus.NOT_FITS


class IncompleteFits(FitsError):
    status = FitsStatus.INCOMPLETE


class CorruptFits(FitsError):
    status = FitsStatus.CORRUPT


_ERRORS: dict[FitsStatus, type[FitsError]] = {
    FitsStatus.NOT_FITS: NotFits,
    FitsStatus.INCOMPLETE: IncompleteFits,
    FitsStatus.CORRUPT: CorruptFits,
}


@dataclass(frozen=True)
class HduLayout:
    index: int
    header_offset: int
    header_size: int  # bytes, a multiple of 2880
    data_size: int  # bytes declared, before padding
    xtension: str | None  # None for the primary HDU
    extname: str | None

    @property
    def data_offset(self) -> int:
        return self.header_offset + self.header_size

    @property
    def padded_data_size(self) -> int:
        return -(-self.data_size // BLOCK) * BLOCK

    @property
    def end(self) -> int:
        return self.data_offset + self.padded_data_size


@dataclass(frozen=True)
class FitsLayout:
    path: Path
    status: FitsStatus
    reason: str
    size: int  # bytes on disk when the walk started
    # The size the file must reach: exact when complete; when incomplete, the
    # smallest size consistent with what has been read so far.
    expected_size: int
    hdus: tuple[HduLayout, ...] = ()
    primary_header: fits.Header | None = field(default=None, repr=False, compare=False)
    trailing_bytes: int = 0  # ignored bytes after the last HDU

    @property
    def complete(self) -> bool:
        return self.status is FitsStatus.COMPLETE

    @property
    def n_hdus(self) -> int:
        return len(self.hdus)

    def raise_for_status(self) -> FitsLayout:
        if self.status is not FitsStatus.COMPLETE:
            raise _ERRORS[self.status](f"{self.path.name}: {self.reason}")
        return self


class _Stop(Exception):
    def __init__(self, status: FitsStatus, reason: str, expected: int) -> None:
        super().__init__(reason)
        self.status, self.reason, self.expected = status, reason, expected


def _card_value(card: bytes) -> str:
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


def _read_header(f, offset: int, size: int, index: int) -> tuple[bytes, dict[str, str]]:
    """Read one header starting at ``offset``; return its bytes and values of
    the structural keywords. Raises _Stop when it cannot."""
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
                raise _Stop(
                    FitsStatus.INCOMPLETE,
                    f"{what} is unwritten (NUL bytes at offset {start + i}) before its END card",
                    start + BLOCK,
                )
            if _NOT_TEXT.search(card):
                raise _Stop(
                    FitsStatus.CORRUPT,
                    f"{what} has a non-ASCII card at offset {start + i}",
                    start + BLOCK,
                )
            keyword = card[:8].rstrip().decode("ascii")
            if keyword == "END":
                if len(block) < BLOCK:
                    raise _Stop(
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
                keys.setdefault(keyword, _card_value(card))
        if len(block) < BLOCK:
            got = max(0, len(block))
            raise _Stop(
                FitsStatus.INCOMPLETE,
                f"{what} ends after {nblock * BLOCK + got} bytes without an END card "
                f"(file is {size} bytes)",
                start + BLOCK,
            )
        raw += block
    raise _Stop(
        FitsStatus.CORRUPT,
        f"{what} has no END card in its first {_MAX_HEADER_BLOCKS} blocks",
        offset + _MAX_HEADER_BLOCKS * BLOCK,
    )


def _int_key(keys: dict[str, str], name: str, what: str, end: int, minimum: int = 0) -> int:
    try:
        value = int(keys[name])
    except KeyError:
        raise _Stop(FitsStatus.CORRUPT, f"{what} lacks mandatory keyword {name}", end) from None
    except ValueError:
        raise _Stop(
            FitsStatus.CORRUPT, f"{what} has a non-integer {name} = {keys[name]!r}", end
        ) from None
    if value < minimum:
        raise _Stop(FitsStatus.CORRUPT, f"{what} has {name} = {value} (< {minimum})", end)
    return value


def _data_size(keys: dict[str, str], index: int, end: int) -> int:
    """Bytes of data declared by a header (FITS 4.0, eqs. 1, 2 and 4)."""
    what = "primary header" if index == 0 else f"header of HDU {index}"
    bitpix = _int_key(keys, "BITPIX", what, end, minimum=-64)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise _Stop(FitsStatus.CORRUPT, f"{what} has an invalid BITPIX = {bitpix}", end)
    naxis = _int_key(keys, "NAXIS", what, end)
    if naxis > 999:
        raise _Stop(FitsStatus.CORRUPT, f"{what} has NAXIS = {naxis} (> 999)", end)
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


def fits_layout(path: str | os.PathLike[str], *, allow_unpadded_end: bool = False) -> FitsLayout:
    """Walk the HDU headers of ``path`` and say whether the file is whole.

    Reads only header blocks (and, at the end, at most one card after the
    last HDU); data is skipped by seeking, so the cost does not depend on the
    data size. Never raises for a bad or short file: the status and reason
    say what is wrong. OSError (file missing, unreadable) propagates.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(_SIMPLE))
        written = head.rstrip(b"\0")
        if not _SIMPLE.startswith(written):
            return FitsLayout(
                path,
                FitsStatus.NOT_FITS,
                "not a FITS file: the first card is not 'SIMPLE  =                    T'",
                size,
                0,
            )
        if len(written) < len(_SIMPLE):
            # A prefix of the SIMPLE card (or nothing yet, or NULs of a
            # preallocated file): a writer that has only just begun.
            return FitsLayout(
                path,
                FitsStatus.INCOMPLETE,
                "empty file" if not size else f"only the first {len(written)} bytes are written",
                size,
                BLOCK,
            )

        hdus: list[HduLayout] = []
        primary: fits.Header | None = None
        offset = 0
        try:
            while True:
                raw, keys = _read_header(f, offset, size, len(hdus))
                index = len(hdus)
                if index > 0 and "XTENSION" not in keys:
                    raise _Stop(
                        FitsStatus.CORRUPT,
                        f"header of HDU {index} lacks XTENSION",
                        offset + len(raw),
                    )
                data_size = _data_size(keys, index, offset + len(raw))
                hdu = HduLayout(
                    index=index,
                    header_offset=offset,
                    header_size=len(raw),
                    data_size=data_size,
                    xtension=keys.get("XTENSION"),
                    extname=keys.get("EXTNAME"),
                )
                hdus.append(hdu)
                if index == 0:
                    primary = _parse_header(raw, path)
                if size < hdu.end:
                    short = hdu.end - size
                    data_end = hdu.data_offset + hdu.data_size
                    if size >= data_end:
                        if allow_unpadded_end:
                            return FitsLayout(
                                path,
                                FitsStatus.COMPLETE,
                                f"complete ({len(hdus)} HDUs; final padding absent, tolerated)",
                                size,
                                data_end,
                                tuple(hdus),
                                primary,
                            )
                        raise _Stop(
                            FitsStatus.INCOMPLETE,
                            f"HDU {index} data is present but its padding to 2880 bytes is "
                            f"{short} bytes short: still being written, or written without "
                            f"the padding FITS requires",
                            hdu.end,
                        )
                    raise _Stop(
                        FitsStatus.INCOMPLETE,
                        f"HDU {index} declares {data_size} data bytes but only "
                        f"{max(0, size - hdu.data_offset)} are present "
                        f"(file {size} bytes, expected {hdu.end})",
                        hdu.end,
                    )
                offset = hdu.end
                if offset == size:
                    break
                f.seek(offset)
                nxt = f.read(CARD)
                if nxt.count(0) == len(nxt):
                    raise _Stop(
                        FitsStatus.INCOMPLETE,
                        f"NUL bytes after HDU {index} (space allocated but not yet written)",
                        offset + BLOCK,
                    )
                if nxt.startswith(_XTENSION) or _XTENSION.startswith(nxt):
                    continue
                return FitsLayout(
                    path,
                    FitsStatus.COMPLETE,
                    f"complete ({len(hdus)} HDUs; {size - offset} trailing bytes ignored)",
                    size,
                    offset,
                    tuple(hdus),
                    primary,
                    trailing_bytes=size - offset,
                )
        except _Stop as stop:
            return FitsLayout(
                path, stop.status, stop.reason, size, stop.expected, tuple(hdus), primary
            )
    return FitsLayout(
        path,
        FitsStatus.COMPLETE,
        f"complete ({len(hdus)} HDUs)",
        size,
        offset,
        tuple(hdus),
        primary,
    )


def _parse_header(raw: bytes, path: Path) -> fits.Header:
    try:
        return fits.Header.fromstring(raw.decode("ascii"))
    except Exception as exc:  # astropy raises several types for malformed cards
        raise _Stop(
            FitsStatus.CORRUPT, f"primary header cannot be parsed: {exc}", len(raw)
        ) from exc


def read_primary_header(path: str | os.PathLike[str]) -> fits.Header:
    """The primary header, reading only its blocks.

    Raises NotFits, IncompleteFits or CorruptFits (all ValueError) when there
    is no complete, parseable primary header; OSError when unreadable.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        written = f.read(len(_SIMPLE)).rstrip(b"\0")
        if not _SIMPLE.startswith(written):
            raise NotFits(
                f"{path.name}: not a FITS file: the first card is not 'SIMPLE  =                    T'"
            )
        if len(written) < len(_SIMPLE):
            raise IncompleteFits(f"{path.name}: no complete primary header ({size} bytes)")
        try:
            raw, _ = _read_header(f, 0, size, 0)
            return _parse_header(raw, path)
        except _Stop as stop:
            raise _ERRORS[stop.status](f"{path.name}: {stop.reason}") from None


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Streaming sha256 of the whole file, as ``sha256:<hex>``."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return f"sha256:{h.hexdigest()}"
