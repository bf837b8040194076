"""The table of a tile-compressed image, checked before any tile is read.

A tile-compressed SCI is a binary table (FITS 4.0, section 10): a row per
tile, whose variable-length columns (COMPRESSED_DATA, and GZIP_COMPRESSED_DATA
or UNCOMPRESSED_DATA for tiles that would not compress) hold a descriptor,
(element count, offset into the heap), and the heap after the rows holds the
tiles' bytes. astropy reads a tile wherever its descriptor points: reading
the whole image it cuts the heap to the PCOUNT bytes the header declares,
but reading part of it (``section``) it reads the file at the heap's start
plus the offset, past the heap and into whatever follows. So the door, which
reads part by part to bound its memory (compressed_sci.py), first holds
every descriptor to the heap itself, and each tile and plane to a size that
one read may hold.

Pure: the table header (as astropy parses it) and the rows' bytes in,
``TableError`` with the reason out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from calstream.steps.table_columns import TableError, count, row_columns

# One plane of the largest JWST detector read out in 64-bit floats is 32 MiB
# (2048 x 2048 x 8); tiles are rows or planes in practice. What one read at
# the door may hold, for a plane and for a tile, whatever the file declares.
MAX_READ_BYTES = 64 * 2**20

_BITPIX_BYTES = {8: 1, 16: 2, 32: 4, 64: 8, -32: 4, -64: 8}


def check_tile_table(header: Mapping[str, Any], rows: bytes) -> None:
    """Every tile and plane within MAX_READ_BYTES, every descriptor inside the
    heap; ``rows``: the table's NAXIS1 x NAXIS2 bytes."""
    axes, tile, item = _image_geometry(header)
    plane = math.prod(axes[:2]) * item
    if plane > MAX_READ_BYTES:
        raise TableError(f"one plane of the image is {plane} bytes, more than a "
                         f"read at the door may hold ({MAX_READ_BYTES})")
    # astropy cuts a tile at the image's edge, so a tile larger than the
    # image is the image.
    tile_bytes = math.prod(min(t, a) for t, a in zip(tile, axes, strict=True)) * item
    if tile_bytes > MAX_READ_BYTES:
        raise TableError(f"a tile ({tile}) is {tile_bytes} bytes, more than a read at "
                         f"the door may hold ({MAX_READ_BYTES})")
    width, height = count(header, "NAXIS1"), count(header, "NAXIS2")
    pcount, theap = count(header, "PCOUNT", 0), count(header, "THEAP", width * height)
    if len(rows) != width * height:
        raise TableError(f"the table's rows are {len(rows)} bytes, not {width * height}")
    # The heap runs from THEAP to the end of the data: PCOUNT counts the gap too.
    heap = width * height + pcount - theap
    if theap < width * height or heap < 0:
        raise TableError(f"THEAP = {theap} puts the heap outside the table's data")
    table = np.frombuffer(rows, np.uint8).reshape(height, width)
    for column in row_columns(header):
        if column.descriptor is None or not column.width:
            continue
        pairs = table[:, column.offset:column.offset + column.width].copy().view(
            column.descriptor)
        counts, offsets = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        # Compared one by one first, so no product below can overflow.
        if height and (counts.min() < 0 or offsets.min() < 0
                       or counts.max() > heap or offsets.max() > heap
                       or (offsets + counts * column.element).max() > heap):
            raise TableError(f"a tile of {column.name} lies outside the heap of "
                             f"{heap} bytes")


def _image_geometry(header: Mapping[str, Any]) -> tuple[list[int], list[int], int]:
    """(ZNAXISn, ZTILEn, bytes a pixel), each a positive integer or refused."""
    naxis, bitpix = header.get("ZNAXIS"), header.get("ZBITPIX")
    if type(naxis) is not int or not 0 < naxis <= 999:
        raise TableError(f"ZNAXIS = {naxis!r} declares no image")
    if bitpix not in _BITPIX_BYTES or type(bitpix) is not int:
        raise TableError(f"ZBITPIX = {bitpix!r}")
    axes = [count(header, f"ZNAXIS{i}", positive=True) for i in range(1, naxis + 1)]
    # astropy's default tiles: rows (the first axis whole, every other axis 1).
    tile = [count(header, f"ZTILE{i}", axes[0] if i == 1 else 1, positive=True)
            for i in range(1, naxis + 1)]
    return axes, tile, _BITPIX_BYTES[bitpix]
