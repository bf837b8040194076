"""The NIRCam short-wave detectors the imaging modes read: where each sits in
the focal plane (SIAF full-frame apertures), its subarrays and readout
patterns, and its fixed bias and pixel-response patterns (the SUPERBIAS and
FLAT references are these same maps)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from calstream.steps.synthetic.detector_noise import name_key, rng
from calstream.steps.synthetic.focal_plane import LinearAperture, Subarray, border_reference_pixels

PIXEL_SCALE = 0.031  # arcsec/pixel, short-wave channel
FULL_SIZE = 2048
REFPIX_BORDER = 4  # a full frame has 4 reference pixels on each edge, with no signal
VIDL_PARITY = -1  # NIRCam ideal X runs along -V2


@dataclass(frozen=True)
class DetectorGeometry:
    """Where a short-wave detector sits in the focal plane (SIAF full-frame aperture)."""

    name: str
    sca_num: int
    v2_ref: float  # arcsec, at the full-frame reference pixel (1024.5, 1024.5)
    v3_ref: float
    v3_idl_yangle: float  # degrees
    # Detector-to-science flip: the science frame is the detector frame
    # mirrored in x (FASTAXIS=-1) or in y (SLOWAXIS=-2).
    flip: str
    # Science-frame corner holding the SUB160/SUB320/SUB640 subarrays
    # (the corner nearest the module centre). The point-source subarrays
    # (SUB64P, SUB160P, SUB400P) sit in the opposite, outer corner.
    sub_corner: tuple[str, str]

    @property
    def module(self) -> str:
        return self.name[3]

    @property
    def fastaxis(self) -> int:
        return -1 if self.flip == "x" else 1

    @property
    def slowaxis(self) -> int:
        return -2 if self.flip == "y" else 2

    @property
    def aperture(self) -> LinearAperture:
        """The full frame's linear pixel -> V2/V3 mapping."""
        centre = (FULL_SIZE + 1) / 2
        return LinearAperture(PIXEL_SCALE, centre, centre, self.v2_ref, self.v3_ref,
                              self.v3_idl_yangle, VIDL_PARITY)


# V2Ref, V3Ref, V3IdlYAngle from the SIAF alignment of the full-frame apertures.
DETECTORS: dict[str, DetectorGeometry] = {
    g.name: g
    for g in (
        DetectorGeometry("NRCA1", 481, 120.521931, -527.681271, -0.57873665, "x", ("high", "high")),
        DetectorGeometry("NRCA2", 482, 119.668749, -459.968346, -0.21514994, "y", ("high", "low")),
        DetectorGeometry("NRCA3", 483, 51.905905, -528.126746, 0.26908435, "x", ("low", "high")),
        DetectorGeometry("NRCA4", 484, 52.295020, -460.099830, 0.07724494, "y", ("low", "low")),
        DetectorGeometry("NRCB1", 486, -122.636754, -457.771697, 0.28424495, "y", ("low", "low")),
        DetectorGeometry("NRCB2", 487, -122.873335, -525.486255, 0.81935905, "x", ("low", "high")),
        DetectorGeometry("NRCB3", 488, -54.829507, -457.752694, -0.48866820, "y", ("high", "low")),
        DetectorGeometry("NRCB4", 489, -54.586077, -525.676157, -0.36941911, "x", ("high", "high")),
    )
}

# Square imaging subarrays read through one output; FULL uses four. The "P"
# (point-source) ones are those time-series imaging uses: JDox places them in
# the outer top corner of module B, a corner with few bad pixels.
SUBARRAY_SIZES = {
    "SUB64P": 64,
    "SUB160": 160,
    "SUB160P": 160,
    "SUB320": 320,
    "SUB400P": 400,
    "SUB640": 640,
    "FULL": FULL_SIZE,
}

# NIRCam readout patterns: (frames averaged per group, frames skipped between groups).
READOUT_PATTERNS = {
    "RAPID": (1, 0),
    "BRIGHT1": (1, 1),
    "BRIGHT2": (2, 0),
    "SHALLOW2": (2, 3),
    "SHALLOW4": (4, 1),
    "MEDIUM2": (2, 8),
    "MEDIUM8": (8, 2),
    "DEEP2": (2, 18),
    "DEEP8": (8, 12),
}


def subarray_for(detector: str, name: str) -> Subarray:
    """Geometry of an imaging subarray on a short-wave detector, in the science frame."""
    geom = detector_geometry(detector)
    try:
        size = SUBARRAY_SIZES[name.upper()]
    except KeyError:
        raise ValueError(
            f"unsupported subarray {name!r}; one of {sorted(SUBARRAY_SIZES)}"
        ) from None
    if name.upper() == "FULL":
        start = (1, 1)
    else:
        outer = name.upper().endswith("P")
        start = tuple(
            1 if (c == "low") != outer else FULL_SIZE - size + 1 for c in geom.sub_corner
        )
    return Subarray(
        name=name.upper(),
        xstart=start[0],
        ystart=start[1],
        xsize=size,
        ysize=size,
        fastaxis=geom.fastaxis,
        slowaxis=geom.slowaxis,
        noutputs=4 if name.upper() == "FULL" else 1,
    )


def detector_geometry(detector: str) -> DetectorGeometry:
    try:
        return DETECTORS[detector.upper()]
    except KeyError:
        raise ValueError(
            f"unsupported detector {detector!r}; short-wave only: {sorted(DETECTORS)}"
        ) from None


def aperture_name(detector: str, subarray: str) -> str:
    return f"{detector.upper()}_{subarray.upper()}"


def pixel_to_v2v3(detector: str, x_full, y_full):
    """Science-frame full-frame pixel (1-based) to V2, V3 (arcsec), SIAF linear model."""
    return detector_geometry(detector).aperture.pixel_to_v2v3(x_full, y_full)


def v2v3_to_pixel(detector: str, v2, v3):
    """Inverse of `pixel_to_v2v3`."""
    return detector_geometry(detector).aperture.v2v3_to_pixel(v2, v3)


@functools.lru_cache(maxsize=16)
def _full_frame_bias(detector: str, level: float) -> np.ndarray:
    # A fixed pattern per detector (not per seed): the SUPERBIAS reference is
    # this same map, as a real one is the mean of many bias frames.
    noise = rng(name_key(detector), 1)
    cols = noise.normal(0.0, 25.0, FULL_SIZE)
    pix = noise.normal(0.0, 40.0, (FULL_SIZE, FULL_SIZE))
    bias = (level + cols[None, :] + pix).astype(np.float32)
    bias.setflags(write=False)
    return bias


def detector_bias(spec, detector: str) -> np.ndarray:
    """The bias (DN) of every pixel of the spec's subarray on `detector`."""
    sub = subarray_for(detector, spec.subarray)
    full = _full_frame_bias(detector.upper(), float(spec.bias_level))
    y0, x0 = sub.ystart - 1, sub.xstart - 1
    return full[y0 : y0 + sub.ysize, x0 : x0 + sub.xsize].copy()


@functools.lru_cache(maxsize=16)
def _full_frame_flat(detector: str) -> np.ndarray:
    # Pixel response: a gentle gradient plus 1% pixel-to-pixel scatter, fixed
    # per detector; the FLAT reference is this same map.
    noise = rng(name_key(detector), 2)
    yy, xx = np.mgrid[0:FULL_SIZE, 0:FULL_SIZE] / FULL_SIZE
    flat = 1.0 + 0.03 * (xx - 0.5) - 0.02 * (yy - 0.5) + noise.normal(0.0, 0.01, xx.shape)
    flat = flat.astype(np.float32)
    flat.setflags(write=False)
    return flat


def detector_flat(spec, detector: str) -> np.ndarray:
    """Relative response of every pixel of the spec's subarray (reference pixels: 1)."""
    sub = subarray_for(detector, spec.subarray)
    full = _full_frame_flat(detector.upper())
    y0, x0 = sub.ystart - 1, sub.xstart - 1
    flat = full[y0 : y0 + sub.ysize, x0 : x0 + sub.xsize].copy()
    flat[reference_pixel_mask(spec, detector)] = 1.0
    return flat


def reference_pixel_mask(spec, detector: str) -> np.ndarray:
    """True where the subarray holds reference pixels (the full frame's 4-pixel border)."""
    return border_reference_pixels(subarray_for(detector, spec.subarray), FULL_SIZE,
                                   REFPIX_BORDER)
