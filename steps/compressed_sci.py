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

So the door bounds the pixels by the file's size, then reads them whole, as
jwst does (``data``; reading plane by plane with ``section`` took tiles
from beyond the heap that PCOUNT declares, which ``data`` then refused). A
raw exposure is not a file anyone compresses by hand often; when one comes,
its door costs one decompression in the watcher's thread, and memory of at
most MAX_EXPANSION times the file's size while it lasts.
"""

from __future__ import annotations

import math
from typing import Any

from astropy.io import fits

# Rice compression, the FITS default for integers, takes raw ramps (16-bit
# counts with a few bits of noise) to a half or a third of their size: 16
# times is four times the margin. Beyond it is a header that lies about its
# image, or pixels that are no exposure (a frame of zeros).
MAX_EXPANSION = 16
_BITPIX = (8, 16, 32, 64, -32, -64)


class ImpossibleImage(ValueError):
    """What a tile-compressed SCI declares cannot be an exposure's pixels."""


def compressed_sci_axes(hdu: fits.CompImageHDU, fname: str, file_size: int) -> dict[str, Any]:
    """NAXIS and NAXIS1..4 of a tile-compressed SCI, read whole; ImpossibleImage
    with the reason when it cannot be. astropy's own exceptions from reading
    the tiles propagate, for the caller to name."""
    header = hdu.header
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
    shape = hdu.data.shape  # every tile decompressed, as jwst will
    if shape != tuple(reversed(axes)):  # astropy's own reading disagrees
        raise ImpossibleImage(f"{fname}: the tile-compressed SCI holds {shape[::-1]}, not "
                              f"the axes {axes} its header declares")
    return {"NAXIS": len(axes), **{f"NAXIS{i}": header.get(f"NAXIS{i}") for i in range(1, 5)}}
