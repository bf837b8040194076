"""A tile-compressed SCI array, judged at the door as jwst will read it.

An uncal SCI extension may be tile-compressed (FITS 4.0, section 10: a
binary table of compressed tiles, which astropy, and so jwst, presents as
the image). Two things then escape a walk of the headers:

* its header says how large the image is, not the file: a few kilobytes of
  tiles can declare any size the primary header's counts allow (up to
  10^21 bytes), which the detector1 worker would allocate, and be killed
  for on every attempt (and its neighbours with it);
* the table's own keywords (ZCMPTYPE, ZBITPIX, ZTILEn, ZNAXISn, ...) are read
  only when the pixels are: a forged one passed the door and failed in
  detector1, as a permanent failure instead of a ``bad_file``.

So the door bounds the pixels by the file's size, holds the tile table to
its heap (tile_table.py), and then reads the pixels as jwst will, but a few
planes at a time (``section``), at most MAX_READ_BYTES a read: a whole
image at once is what a forged file of any size asks the daemon's main
process to hold. A tile is bounded alike, so the door holds a few times
MAX_READ_BYTES (and the compressed bytes) for any file. A raw exposure is
not a file anyone compresses by hand often; when one comes, its door costs
one decompression in the watcher's thread.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from calstream.steps.fitsfile import HduLayout
from calstream.steps.regular_files import open_regular_file
from calstream.steps.table_columns import TableError
from calstream.steps.tile_table import MAX_READ_BYTES, check_tile_table

# Rice compression, the FITS default for integers, takes raw ramps (16-bit
# counts with a few bits of noise) to a half or a third of their size: 16
# times is four times the margin. Beyond it is a header that lies about its
# image, or pixels that are no exposure (a frame of zeros).
MAX_EXPANSION = 16
_BITPIX = (8, 16, 32, 64, -32, -64)


class ImpossibleImage(ValueError):
    """What a tile-compressed SCI declares cannot be an exposure's pixels."""


def compressed_sci_axes(path: Path, table: HduLayout, fname: str) -> dict[str, Any]:
    """NAXIS and NAXIS1..4 of the tile-compressed SCI whose table the walk
    found at ``table``, every tile read; ImpossibleImage with the reason when
    it cannot be. astropy's own exceptions from reading the tiles propagate,
    for the caller to name."""
    file_size = path.stat().st_size
    # astropy given the file opened as the walk opens it: by its path it would
    # wait on a FIFO put there meanwhile (fitsfile.py).
    with open_regular_file(path) as f, fits.open(f, memmap=False, lazy_load_hdus=True) as hdul:
        try:
            hdu = hdul["SCI", 1]
        except KeyError:
            raise ImpossibleImage(f"{fname}: no SCI extension") from None
        if not isinstance(hdu, fits.CompImageHDU):
            raise ImpossibleImage(f"{fname}: the SCI extension is a table, not a "
                                  "tile-compressed image")
        axes = _bounded_axes(hdu.header, fname, file_size)
        _check_table(path, table, fname)
        shape = tuple(reversed(axes))
        for at, read in _slabs(shape, abs(hdu.header["BITPIX"]) // 8):
            got = hdu.section[at].shape  # every tile decompressed, as jwst will
            if got != read:  # astropy's own reading disagrees
                raise ImpossibleImage(f"{fname}: the tile-compressed SCI holds {got[::-1]} "
                                      f"where its header declares {read[::-1]}")
    return {"NAXIS": len(axes), **{f"NAXIS{i}": hdu.header.get(f"NAXIS{i}") for i in range(1, 5)}}


def _slabs(shape: tuple[int, ...], item: int) -> Iterator[tuple[tuple, tuple[int, ...]]]:
    """(index, shape it reads) of reads that cover the image in whole planes,
    as many at a time as MAX_READ_BYTES holds (tile_table bounds a plane by
    it), in the fewest reads. Each read goes through the whole tile table
    (astropy converts its descriptor column on every read), so reading one
    plane at a time would cost planes x tiles: a TSO of thousands of planes,
    each through every one of its hundreds of thousands of row tiles.

    The reads slice one axis, holding every axis after it whole: the planes'
    (NAXIS3) as a rule, an outer one when the blocks after it are small (a
    forged image of a million 1 x 1 planes, one group each, would otherwise
    take a million reads, each through a million tiles)."""
    if len(shape) < 3:
        yield (Ellipsis, shape)
        return
    axis, step = _slab_axis(shape, item)
    for outer in np.ndindex(shape[:axis]):
        for first in range(0, shape[axis], step):
            last = min(first + step, shape[axis])
            yield (*outer, slice(first, last)), (last - first, *shape[axis + 1:])


def _slab_axis(shape: tuple[int, ...], item: int) -> tuple[int, int]:
    """(axis to slice, its step) of the fewest reads; a tie goes to the
    planes' axis, the innermost."""
    best = None
    for axis in range(len(shape) - 3, -1, -1):
        block = math.prod(shape[axis + 1:]) * item
        if axis < len(shape) - 3 and block > MAX_READ_BYTES:
            break  # an outer axis holds more than a read after it
        step = max(1, MAX_READ_BYTES // block)
        reads = math.prod(shape[:axis]) * -(-shape[axis] // step)
        if best is None or reads < best[0]:
            best = (reads, axis, step)
    return best[1], best[2]


def _bounded_axes(header: fits.Header, fname: str, file_size: int) -> list[int]:
    naxis = header.get("NAXIS")
    axes = [header.get(f"NAXIS{i}") for i in range(1, naxis + 1)] if type(naxis) is int else []
    if not axes or not all(type(a) is int and a > 0 for a in axes):
        raise ImpossibleImage(f"{fname}: the tile-compressed SCI declares no image "
                              f"(NAXIS = {naxis!r}, axes {axes[:4]!r})")
    bitpix = header.get("BITPIX")
    if type(bitpix) is not int or bitpix not in _BITPIX:
        raise ImpossibleImage(f"{fname}: the tile-compressed SCI has BITPIX = {bitpix!r}")
    pixels = math.prod(axes) * abs(bitpix) // 8
    if pixels > MAX_EXPANSION * file_size:
        raise ImpossibleImage(f"{fname}: the tile-compressed SCI declares {pixels} bytes of "
                              f"pixels in a file of {file_size}: more than {MAX_EXPANSION} "
                              "times its size, which no raw exposure compresses to")
    return axes


def _check_table(path: Path, table: HduLayout, fname: str) -> None:
    """The tile table's header as astropy reads it and its rows, to tile_table."""
    with open_regular_file(path) as f:  # never waits on a FIFO (fitsfile.py)
        f.seek(table.header_offset)
        header = fits.Header.fromstring(f.read(table.header_size))
        rows = header.get("NAXIS1", 0) * header.get("NAXIS2", 0)
        f.seek(table.data_offset)
        # The walk found the table's data inside the file, so this is at most its size.
        data = f.read(min(rows, table.data_size)) if type(rows) is int and rows > 0 else b""
    try:
        check_tile_table(header, data)
    except TableError as exc:
        raise ImpossibleImage(f"{fname}: the tile-compressed SCI's table: {exc}") from None
