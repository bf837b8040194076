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
``TileTableError`` with the reason out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

# One plane of the largest JWST detector read out in 64-bit floats is 32 MiB
# (2048 x 2048 x 8); tiles are rows or planes in practice. What one read at
# the door may hold, for a plane and for a tile, whatever the file declares.
MAX_READ_BYTES = 64 * 2**20

# Bytes of one element of each TFORM type code (X: bits, counted apart).
_ELEMENT = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16}
# Descriptors: (count, offset) as two big-endian 32-bit (P) or 64-bit (Q) integers.
_DESCRIPTOR = {"P": np.dtype(">i4"), "Q": np.dtype(">i8")}
# rT (fixed: r elements of type T) or rPt(max) / rQt(max) (a descriptor of
# type t elements); astropy reads the same forms (r of a descriptor is 0 or 1).
_TFORM = re.compile(r"(\d*)([LXBIJKAEDCM])\S*|([01]?)([PQ])([LBIJKAEDCM])(?:\(\d*\))?")
_BITPIX_BYTES = {8: 1, 16: 2, 32: 4, 64: 8, -32: 4, -64: 8}


class TileTableError(ValueError):
    """The tile table of a compressed image is not one its reader may trust."""


def check_tile_table(header: Mapping[str, Any], rows: bytes) -> None:
    """Every tile and plane within MAX_READ_BYTES, every descriptor inside the
    heap; ``rows``: the table's NAXIS1 x NAXIS2 bytes."""
    axes, tile, item = _image_geometry(header)
    plane = math.prod(axes[:2]) * item
    if plane > MAX_READ_BYTES:
        raise TileTableError(f"one plane of the image is {plane} bytes, more than a "
                             f"read at the door may hold ({MAX_READ_BYTES})")
    # astropy cuts a tile at the image's edge, so a tile larger than the
    # image is the image.
    tile_bytes = math.prod(min(t, a) for t, a in zip(tile, axes, strict=True)) * item
    if tile_bytes > MAX_READ_BYTES:
        raise TileTableError(f"a tile ({tile}) is {tile_bytes} bytes, more than a read at "
                             f"the door may hold ({MAX_READ_BYTES})")
    width, height = _count(header, "NAXIS1"), _count(header, "NAXIS2")
    pcount, theap = _count(header, "PCOUNT", 0), _count(header, "THEAP", width * height)
    if len(rows) != width * height:
        raise TileTableError(f"the table's rows are {len(rows)} bytes, not {width * height}")
    # The heap runs from THEAP to the end of the data: PCOUNT counts the gap too.
    heap = width * height + pcount - theap
    if theap < width * height or heap < 0:
        raise TileTableError(f"THEAP = {theap} puts the heap outside the table's data")
    table = np.frombuffer(rows, np.uint8).reshape(height, width)
    for name, at, descriptor, element in _descriptor_columns(header, width):
        pairs = table[:, at:at + 2 * descriptor.itemsize].copy().view(descriptor)
        counts, offsets = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        # Compared one by one first, so no product below can overflow.
        if height and (counts.min() < 0 or offsets.min() < 0
                       or counts.max() > heap or offsets.max() > heap
                       or (offsets + counts * element).max() > heap):
            raise TileTableError(f"a tile of {name} lies outside the heap of {heap} bytes")


def _image_geometry(header: Mapping[str, Any]) -> tuple[list[int], list[int], int]:
    """(ZNAXISn, ZTILEn, bytes a pixel), each a positive integer or refused."""
    naxis, bitpix = header.get("ZNAXIS"), header.get("ZBITPIX")
    if type(naxis) is not int or not 0 < naxis <= 999:
        raise TileTableError(f"ZNAXIS = {naxis!r} declares no image")
    if bitpix not in _BITPIX_BYTES or type(bitpix) is not int:
        raise TileTableError(f"ZBITPIX = {bitpix!r}")
    axes = [_count(header, f"ZNAXIS{i}", positive=True) for i in range(1, naxis + 1)]
    # astropy's default tiles: rows (the first axis whole, every other axis 1).
    tile = [_count(header, f"ZTILE{i}", axes[0] if i == 1 else 1, positive=True)
            for i in range(1, naxis + 1)]
    return axes, tile, _BITPIX_BYTES[bitpix]


def _count(header: Mapping[str, Any], key: str, default: int | None = None, *,
           positive: bool = False) -> int:
    value = header.get(key, default)
    if type(value) is not int or value < (1 if positive else 0):
        raise TileTableError(f"{key} = {value!r} is no {'positive ' if positive else ''}count")
    return value


def _descriptor_columns(header: Mapping[str, Any], width: int):
    """(TTYPE, byte offset in a row, descriptor dtype, element bytes) of each
    variable-length column; the columns' widths must fill the row exactly."""
    fields = _count(header, "TFIELDS")
    at, found = 0, []
    for n in range(1, fields + 1):
        tform = header.get(f"TFORM{n}")
        match = _TFORM.fullmatch(tform.strip().upper()) if isinstance(tform, str) else None
        if match is None:
            raise TileTableError(f"TFORM{n} = {tform!r} is no column format")
        repeat, code, vrepeat, vcode, element = match.groups()
        if vcode:
            descriptor = _DESCRIPTOR[vcode]
            if vrepeat != "0":
                found.append((header.get(f"TTYPE{n}"), at, descriptor, _ELEMENT[element]))
                at += 2 * descriptor.itemsize
            continue
        count = int(repeat) if repeat else 1
        at += -(-count // 8) if code == "X" else count * _ELEMENT[code]
    if at != width:
        raise TileTableError(f"the columns' formats make rows of {at} bytes, not NAXIS1 = {width}")
    return found
