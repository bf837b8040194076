"""Image products as astronomers look at them: zscale limits (percentiles when
zscale cannot decide), an asinh stretch, pixels flagged DO_NOT_USE masked.

North is not turned up: the preview shows the detector (or the i2d's) pixel
grid with row 0 at the bottom, as ds9 does.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.io import fits
from astropy.visualization import AsinhStretch, PercentileInterval, ZScaleInterval

from calstream.steps.regular_files import open_regular_file

DO_NOT_USE = 1  # jwst DQ bit 0: the pixel is not to be used
MASKED_RGB = (90, 20, 60)  # masked pixels: dark purple, not mistaken for sky
PREVIEW_MAX = 1024  # longest side of a preview, in pixels
PREVIEW_MIN = 256  # small subarrays are enlarged (nearest neighbour) up to this
THUMB_SIDE = 128  # longest side of a thumbnail
# What a preview reads, whatever the file's header declares (a product file is
# untrusted: a header costs 80 bytes to claim gigabytes). A plane larger than
# this (11585 pixels square, ~1 GB as float64) is not drawn; a cube's median is
# taken over at most this many integrations, evenly spaced, read one at a time,
# and over no more than MAX_PLANE_PIXELS pixels in all: 16 planes of the
# largest size were 16 GB held at once (a tile-compressed cube declares them
# in a file of kilobytes). A full frame's 16 integrations are 67 M pixels.
MAX_PLANE_PIXELS = 1 << 27
INTEGRATIONS_READ = 16
_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


def read_image(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(data, mask): the science plane, the median over integrations for a cube
    (calints, rateints: over at most INTEGRATIONS_READ of them), and which
    pixels to mask. Sizes are judged from the headers before any data is read."""
    # A regular file only: a FIFO in its place held the worker until the task's
    # time-out, a device (/dev/zero) read without end.
    with open_regular_file(path) as f, fits.open(f, memmap=False) as hdus:
        names = [h.name for h in hdus]
        sci = hdus["SCI"] if "SCI" in names else hdus[0]
        shape = tuple(sci.shape) if isinstance(sci, _IMAGE_HDUS) else ()
        if not shape or not all(shape):
            raise ValueError(f"{path}: no image data")
        if len(shape) not in (2, 3):
            raise ValueError(f"{path}: a {len(shape)}-d science array is not an image")
        if shape[-1] * shape[-2] > MAX_PLANE_PIXELS:
            raise ValueError(f"{path}: a {shape[-1]} x {shape[-2]} image is too large to "
                             f"preview (more than {MAX_PLANE_PIXELS} pixels)")
        picks = None if len(shape) == 2 else _picks(shape[0], shape[-1] * shape[-2])
        data = _read(sci, shape, picks).astype(np.float64)
        dq = _companion(hdus, names, "DQ", shape, picks)
        weight = _companion(hdus, names, "WHT", shape[-2:], None)
    if data.ndim == 3:
        data = np.nanmedian(data, axis=0) if data.shape[0] > 1 else data[0]
        if dq is not None and dq.ndim == 3:
            dq = np.bitwise_and.reduce(dq, axis=0)  # masked when no integration is usable
    mask = ~np.isfinite(data)
    if dq is not None and dq.shape == data.shape:
        mask |= (dq & DO_NOT_USE).astype(bool)
    if weight is not None and weight.shape == data.shape:
        mask |= weight <= 0  # i2d: outside every input
    return data, mask


def _picks(integrations: int, plane_pixels: int) -> list[int]:
    """The integrations a cube's median is taken over: all, or evenly spaced,
    together at most MAX_PLANE_PIXELS (a plane is at most that, checked before)."""
    return evenly_spaced(integrations, min(INTEGRATIONS_READ, MAX_PLANE_PIXELS // plane_pixels))


def evenly_spaced(total: int, count: int) -> list[int]:
    """All of ``range(total)``, or ``count`` (at least one) of them evenly spaced."""
    count = max(1, min(total, count))
    return sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)})


def _read(hdu, shape: tuple[int, ...], picks: list[int] | None) -> np.ndarray:
    if picks is None:
        return np.asarray(hdu.data)
    # section: one plane read from the file at a time, never the whole cube.
    return np.stack([np.asarray(hdu.section[i]) for i in picks]).reshape(len(picks), *shape[1:])


def _companion(hdus, names: list[str], name: str, shape: tuple[int, ...],
               picks: list[int] | None) -> np.ndarray | None:
    """DQ or WHT, read only when its header says it has the science's shape
    (of each plane read): other sizes were never used, and are not read."""
    if name not in names or not isinstance(hdus[name], _IMAGE_HDUS):
        return None
    own = tuple(hdus[name].shape)
    if own == shape:
        return _read(hdus[name], shape, picks)
    if len(shape) == 3 and own == shape[-2:]:  # one DQ plane for every integration
        return _read(hdus[name], own, None)
    return None


def limits(data: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    good = data[~mask]
    if good.size == 0:
        return 0.0, 1.0
    low, high = ZScaleInterval().get_limits(good)
    if not high > low:
        low, high = PercentileInterval(99.5).get_limits(good)
    if not high > low:
        low, high = float(good.min()), float(good.min()) + 1.0
    return float(low), float(high)


def to_rgb(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    low, high = limits(data, mask)
    scaled = np.clip((np.where(mask, low, data) - low) / (high - low), 0.0, 1.0)
    grey = (AsinhStretch(a=0.1)(scaled, clip=True) * 255).round().astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[mask] = MASKED_RGB
    return rgb[::-1]  # row 0 at the bottom


def _bin(data: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of factor x factor blocks, masked pixels left out. A side shorter
    than ``factor`` is one block (a strip of 2 x 5000 pixels was binned to
    nothing, and its preview failed with an IndexError)."""
    fy, fx = min(factor, data.shape[0]), min(factor, data.shape[1])
    h, w = (data.shape[0] // fy) * fy, (data.shape[1] // fx) * fx
    blocks = np.where(mask, np.nan, data)[:h, :w].reshape(h // fy, fy, w // fx, fx)
    with np.errstate(all="ignore"):
        count = np.isfinite(blocks).sum(axis=(1, 3))
        binned = np.nansum(blocks, axis=(1, 3)) / np.maximum(count, 1)
    return binned, count == 0


def resample(rgb: np.ndarray, longest: int) -> np.ndarray:
    """Nearest-neighbour resampling to ``longest`` pixels on the longer side."""
    h, w = rgb.shape[:2]
    scale = longest / max(h, w)
    out_h, out_w = max(1, round(h * scale)), max(1, round(w * scale))
    rows = (np.arange(out_h) * h / out_h).astype(int)
    cols = (np.arange(out_w) * w / out_w).astype(int)
    return rgb[rows][:, cols]


def preview_rgb(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(preview, thumbnail) as RGB arrays."""
    longest = max(data.shape)
    if longest > PREVIEW_MAX:
        data, mask = _bin(data, mask, math.ceil(longest / PREVIEW_MAX))
    rgb = to_rgb(data, mask)
    preview = rgb
    if longest < PREVIEW_MIN:
        factor = PREVIEW_MIN // longest
        preview = np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    return preview, resample(rgb, THUMB_SIDE)
