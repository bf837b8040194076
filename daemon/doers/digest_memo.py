"""Digests this process has read, remembered by each file's stat signature.

An arrival is hashed whole by the watcher before it is announced, and
moments later the same daemon's detector1 admission must know the file
still has that digest (a file replaced meanwhile is stale). At full frame a
second read is 84 MB and 70-150 ms of the fixed cost per exposure (issue 15),
and the header read again costs the main process ~10 ms of CPU at any size;
so are the products a stage-2 admission checks right after this daemon wrote
them. Here the first read answers the second while the file's signature
(size, mtime, inode, ctime: every write or replacement changes one of them)
is the one taken on both sides of that read. It is the trust the watcher's
ledger already gives a signature across restarts; a digest is remembered
only when the signature did not change while the file was being read.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astropy.io.fits import VerifyError

from calstream.steps.admitted_input import stat_sig
from calstream.steps.exposure import ExposureInfo, describe_exposure, json_value
from calstream.steps.exposure_keywords import EXPOSURE_KEYWORDS
from calstream.steps.fitsfile import file_digest, read_primary_header

# Arrivals and products in flight at once are a few dozen; old entries only
# ever miss (a new signature), so the bound is about memory, not correctness.
_MOST = 1024
_memo: OrderedDict[tuple[str, str], tuple[tuple, Any]] = OrderedDict()
_lock = threading.Lock()  # called from worker threads


def signature_of(path: str | os.PathLike[str], digest: str) -> list[int] | None:
    """The stat signature under which this process read ``digest`` of
    ``path`` (None: it did not, or read another since). No I/O: a worker
    given it checks its input by a stat instead of a second read
    (steps/admitted_input.py)."""
    with _lock:
        known = _memo.get((str(path), "digest"))
    return list(known[0]) if known is not None and known[1] == digest else None


def digest_of(path: str | os.PathLike[str]) -> str:
    """``file_digest(path)``, read again only if the file changed (or was
    never read here) since this process last hashed it."""
    return _read(path, "digest", file_digest)


def exposure_of(path: str | os.PathLike[str]) -> ExposureInfo:
    """``describe_exposure(path)`` (raises BadExposure), the same way: the
    admission checks an arrival's claims against the header the watcher
    read (astropy's header parsing: ~10 ms of the main process's CPU)."""
    return _read(path, "exposure", describe_exposure)


def pointing_of(path: str | os.PathLike[str]) -> str | None:
    """The ENGQLPTG of a FITS product's own primary header (None: none, or
    not readable as FITS): what the stage consumers' pointing gate reads."""
    def read(p: Any) -> str | None:
        try:
            value = read_primary_header(p).get("ENGQLPTG")
        except ValueError:  # not FITS, incomplete, corrupt: the run judges the file
            return None
        return value if isinstance(value, str) else None

    return _read(path, "pointing", read)


def exposure_header_of(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The exposure keywords of a FITS product's own primary header, valued
    as describe_exposure copies an uncal file's into its arrival (None: not
    readable as FITS, or a card that cannot be read): what a stage-2 order's
    header copy is judged by (deciders/order_header.py)."""
    def read(p: Any) -> dict[str, Any] | None:
        try:
            hdr = read_primary_header(p)
            return {k.name: json_value(hdr[k.name]) for k in EXPOSURE_KEYWORDS if k.name in hdr}
        # Not FITS, incomplete, corrupt (ValueError); a card astropy cannot read.
        except (ValueError, VerifyError):
            return None

    return _read(path, "header", read)


def _read(path: str | os.PathLike[str], what: str, read: Callable[[Any], Any]) -> Any:
    before = stat_sig(os.stat(path))
    with _lock:
        known = _memo.get((str(path), what))
    if known is not None and known[0] == before:
        return known[1]
    value = read(path)
    _remember(path, what, before, value)
    return value


def _remember(path: str | os.PathLike[str], what: str, sig: tuple, value: Any) -> None:
    """``path`` gave ``value`` while its signature was ``sig``: kept only if
    the file still has that signature now (it was not written meanwhile)."""
    try:
        if stat_sig(os.stat(path)) != sig:
            return
    except OSError:
        return
    key = (str(path), what)
    with _lock:
        _memo[key] = (sig, value)
        _memo.move_to_end(key)
        while len(_memo) > _MOST:
            _memo.popitem(last=False)


def remember_written(path: Path, digest: str) -> None:
    """A file this daemon has just moved into place, its digest computed by
    the worker that wrote it (output_sealing.py)."""
    try:
        _remember(path, "digest", stat_sig(os.stat(path)), digest)
    except OSError:
        pass
