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

Every read opens the file as ``open_regular_file`` does, without waiting and
only if it is a regular file: the watcher's stat comes before the reads,
and a FIFO put in the file's place between the two held the read, a turn
of the door and a thread for ever (a link to ``/dev/zero``: a digest that
never ended). Such a file is then an OSError, and the next look rejects it.

Bytes after the last HDU mean "still being written" when they are the start
of an ``XTENSION`` card or NUL bytes (space preallocated by the writer).
Anything else makes the file corrupt: the standard allows such "special
records", but astropy, and so jwst, refuses a file with them ("Header
missing END card", even for spaces), so a door that ignored them announced
files detector1 could not open.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits

from calstream.steps.fits_header_blocks import (
    BLOCK,
    CARD,
    CARDS_PER_BLOCK,
    SIMPLE,
    XTENSION,
    FitsStatus,
    WalkStopped,
    check_values,
    declared_data_size,
    parse_primary_header,
    read_header,
)
from calstream.steps.regular_files import open_regular_file

__all__ = [
    "BLOCK", "CARD", "CARDS_PER_BLOCK", "CorruptFits", "FitsError", "FitsLayout", "FitsStatus",
    "HduLayout", "IncompleteFits", "NotFits", "file_digest", "fits_layout",
    "read_primary_header", "read_primary_values",
]  # fmt: skip


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
    # NAXIS1..NAXISn as declared (the walk's own reading of the cards, as
    # astropy's: integers, the first card of each keyword)
    axes: tuple[int, ...] = ()
    extver: int = 1  # EXTVER, 1 where absent (as astropy reads it)

    @property
    def key(self) -> tuple[str, int]:
        """What stdatamodels finds an extension by, ``hdul[(name, ver)]``:
        EXTNAME stripped and upper-cased (as astropy compares it), EXTVER."""
        return (self.extname or "").strip().upper(), self.extver

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
    trailing_bytes: int = 0  # bytes after the last HDU that start no HDU (corrupt)

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


def fits_layout(path: str | os.PathLike[str], *, allow_unpadded_end: bool = False) -> FitsLayout:
    """Walk the HDU headers of ``path`` and say whether the file is whole.

    Reads only header blocks (and, at the end, at most one card after the
    last HDU); data is skipped by seeking, so the cost does not depend on the
    data size. Never raises for a bad or short file: the status and reason
    say what is wrong. OSError (file missing, unreadable) propagates.

    The cards are read here, not by astropy: the walk needs only the
    structural keywords. Whether astropy can read the primary header is asked
    once, by the identity check (exposure.describe_exposure) that follows
    the walk, before the file is hashed; asking here too was a second parse
    (the walk took 0.57 ms of the watcher's CPU at SUB160 with it, 0.25 ms
    without: bench/README.md, session 21).
    """
    path = Path(path)
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(SIMPLE))
        written = head.rstrip(b"\0")
        if not SIMPLE.startswith(written):
            return FitsLayout(
                path,
                FitsStatus.NOT_FITS,
                "not a FITS file: the first card is not 'SIMPLE  =                    T'",
                size,
                0,
            )
        if len(written) < len(SIMPLE):
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
        offset = 0
        try:
            while True:
                raw, keys = read_header(f, offset, size, len(hdus))
                index = len(hdus)
                if index > 0 and "XTENSION" not in keys:
                    raise WalkStopped(
                        FitsStatus.CORRUPT,
                        f"header of HDU {index} lacks XTENSION",
                        offset + len(raw),
                    )
                data_size = declared_data_size(keys, index, offset + len(raw))
                check_values(keys, index, offset + len(raw))
                hdu = HduLayout(
                    index=index,
                    header_offset=offset,
                    header_size=len(raw),
                    data_size=data_size,
                    xtension=keys.get("XTENSION"),
                    extname=keys.get("EXTNAME"),
                    # declared_data_size has checked each of them an integer
                    axes=tuple(int(keys[f"NAXIS{i}"]) for i in range(1, int(keys["NAXIS"]) + 1)),
                    extver=int(keys.get("EXTVER", 1)),  # check_values: an integer
                )
                hdus.append(hdu)
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
                            )
                        raise WalkStopped(
                            FitsStatus.INCOMPLETE,
                            f"HDU {index} data is present but its padding to 2880 bytes is "
                            f"{short} bytes short: still being written, or written without "
                            f"the padding FITS requires",
                            hdu.end,
                        )
                    raise WalkStopped(
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
                    raise WalkStopped(
                        FitsStatus.INCOMPLETE,
                        f"NUL bytes after HDU {index} (space allocated but not yet written)",
                        offset + BLOCK,
                    )
                if nxt.startswith(XTENSION) or XTENSION.startswith(nxt):
                    continue
                return FitsLayout(
                    path,
                    FitsStatus.CORRUPT,
                    f"{size - offset} bytes after HDU {index} that start no HDU (astropy, "
                    f"and so jwst, cannot read past them)",
                    size,
                    offset,
                    tuple(hdus),
                    trailing_bytes=size - offset,
                )
        except WalkStopped as stop:
            return FitsLayout(
                path, stop.status, stop.reason, size, stop.expected, tuple(hdus)
            )
    return FitsLayout(
        path,
        FitsStatus.COMPLETE,
        f"complete ({len(hdus)} HDUs)",
        size,
        offset,
        tuple(hdus),
    )


def read_primary_header(path: str | os.PathLike[str]) -> fits.Header:
    """The primary header, reading only its blocks.

    Raises NotFits, IncompleteFits or CorruptFits (all ValueError) when there
    is no complete, parseable primary header; OSError when unreadable.
    """
    path = Path(path)
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        written = f.read(len(SIMPLE)).rstrip(b"\0")
        if not SIMPLE.startswith(written):
            raise NotFits(
                f"{path.name}: not a FITS file: the first card is not 'SIMPLE  =                    T'"
            )
        if len(written) < len(SIMPLE):
            raise IncompleteFits(f"{path.name}: no complete primary header ({size} bytes)")
        try:
            raw, _ = read_header(f, 0, size, 0)
            return parse_primary_header(raw, path)
        except WalkStopped as stop:
            raise _ERRORS[stop.status](f"{path.name}: {stop.reason}") from None


def read_primary_values(path: str | os.PathLike[str]) -> Mapping[str, object]:
    """``read_primary_header`` as a mapping in which each keyword is looked
    up once. astropy finds the card and reads its value at every access
    (with the configuration it consults each time: ~10-20 us), and the
    door's checks ask most keywords two to four times: describe_exposure of
    a SUB160 file took 2.11 ms of CPU, 1.90 ms now (bench/README.md,
    session 27). A value astropy cannot parse raises at each access, as it
    did; a keyword the header lacks is remembered as absent."""
    return _ParsedOnce(read_primary_header(path))


_UNASKED, _ABSENT = object(), object()


class _ParsedOnce(Mapping):
    def __init__(self, header: fits.Header) -> None:
        self._header, self._values = header, {}

    def __getitem__(self, key: str) -> object:
        value = self._values.get(key, _UNASKED)
        if value is _UNASKED:
            try:
                value = self._header[key]
            except KeyError:  # no such card: remembered too (most asked are optional)
                value = _ABSENT
            self._values[key] = value
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        value = self._values.get(key, _UNASKED)
        return key in self._header if value is _UNASKED else value is not _ABSENT

    def __iter__(self) -> Iterator[str]:
        return iter(self._header)

    def __len__(self) -> int:
        return len(self._header)


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20, *,
                sync: bool = False) -> str:
    """Streaming sha256 of the whole file, as ``sha256:<hex>``; with ``sync``,
    the file is also made durable (fsync) on the way."""
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    with open_regular_file(path) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
        if sync:
            os.fsync(f.fileno())
    return f"sha256:{h.hexdigest()}"
