"""The NIRCam imaging scene: a flat sky plus a dozen Gaussian stars fixed on
the sky (so they move in pixels with the dither and image3's tweakreg has
something to align), and for time series a target star whose brightness
changes by integration. `program_truth` says what was injected."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calstream.steps.synthetic.attitude import sky_to_tel, tel_to_sky
from calstream.steps.synthetic.detector_noise import rng
from calstream.steps.synthetic.focal_plane import Subarray
from calstream.steps.synthetic.imaging_pointing import (
    attitude_for_offset,
    dither_offset,
    exposure_pointing,
    primary_aperture_reference,
)
from calstream.steps.synthetic.imaging_spec import ProgramSpec
from calstream.steps.synthetic.nircam_detectors import pixel_to_v2v3, subarray_for, v2v3_to_pixel


@dataclass(frozen=True)
class Star:
    ra: float
    dec: float
    flux: float  # DN/s, total


@dataclass(frozen=True)
class ProgramTruth:
    """What `simulate_program` injected, to check calibrated products against."""

    sky_rate: float  # DN/s per pixel, before any flat field
    dark_rate: float  # DN/s per pixel, removed by dark_current
    gain: float
    stars: tuple[Star, ...]
    # Exposure number -> ENGQLPTG written in its header.
    pointing_quality: dict[int, str]
    # The star at the target coordinates, if any (brightness before any transit).
    target: Star | None = None


def program_truth(spec: ProgramSpec | None = None, *, seed: int | None = None) -> ProgramTruth:
    """The injected scene and rates for `spec` (default: a `ProgramSpec()`; cheap: no
    pixels are simulated)."""
    spec = ProgramSpec() if spec is None else spec
    seed = spec.seed if seed is None else seed
    draw = rng(seed if spec.scene_seed is None else spec.scene_seed, 0)
    det, xref, yref = primary_aperture_reference(spec)
    sub = subarray_for(det, spec.subarray)
    margin = 12
    x = draw.uniform(margin, sub.xsize - margin, spec.n_stars) + sub.xstart - 1
    y = draw.uniform(margin, sub.ysize - margin, spec.n_stars) + sub.ystart - 1
    lo, hi = spec.star_flux_range
    flux = np.exp(draw.uniform(math.log(lo), math.log(hi), spec.n_stars))
    # The field's own attitude, not a visit's: every visit of it sees the same stars.
    att = attitude_for_offset(spec, dither_offset(1))
    ra, dec = tel_to_sky(att, *pixel_to_v2v3(det, x, y))
    stars = tuple(Star(float(r), float(d), float(f)) for r, d, f in zip(ra, dec, flux, strict=True))
    target = Star(spec.target_ra, spec.target_dec, spec.target_flux) if spec.target_flux else None
    return ProgramTruth(
        sky_rate=spec.sky_rate,
        dark_rate=spec.dark_rate,
        gain=spec.gain,
        stars=stars,
        pointing_quality={e: spec.pointing_quality(e) for e in spec.exposure_numbers
                          if e not in spec.missing},
        target=target,
    )


def star_pixel_positions(
    spec: ProgramSpec, exposure: int, detector: str, *, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the stars truly fell in an exposure: 0-based subarray x, y and flux (DN/s)."""
    truth = program_truth(spec, seed=seed)
    return _star_pixels(spec, detector, truth, exposure_pointing(spec, exposure).true_attitude)


def _star_pixels(spec: ProgramSpec, detector: str, truth: ProgramTruth, att: np.ndarray):
    sub = subarray_for(detector, spec.subarray)
    ra = np.array([s.ra for s in truth.stars])
    dec = np.array([s.dec for s in truth.stars])
    flux = np.array([s.flux for s in truth.stars])
    xs, ys = v2v3_to_pixel(detector, *sky_to_tel(att, ra, dec))
    return xs - sub.xstart, ys - sub.ystart, flux


def target_pixel_position(
    spec: ProgramSpec, exposure: int, detector: str
) -> tuple[float, float] | None:
    """Where the target star truly fell: 0-based subarray x, y (None: no target star)."""
    if not spec.target_flux:
        return None
    att = exposure_pointing(spec, exposure).true_attitude
    sub = subarray_for(detector, spec.subarray)
    x, y = v2v3_to_pixel(detector, *sky_to_tel(att, spec.target_ra, spec.target_dec))
    return float(x) - sub.xstart, float(y) - sub.ystart


def _psf(spec: ProgramSpec, sub: Subarray, x0: float, y0: float, flux: float) -> np.ndarray | None:
    s2 = 2.0 * spec.star_sigma**2
    reach = 5 * spec.star_sigma
    if not (-reach < x0 < sub.xsize + reach and -reach < y0 < sub.ysize + reach):
        return None
    yy, xx = np.mgrid[0 : sub.ysize, 0 : sub.xsize]
    return flux / (math.pi * s2) * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / s2)


def rate_images(
    spec: ProgramSpec, detector: str, truth: ProgramTruth, exposure: int, att: np.ndarray
) -> list[np.ndarray]:
    """Photon rate (DN/s) per pixel and integration for the true attitude of one exposure."""
    sub = subarray_for(detector, spec.subarray)
    xs, ys, flux = _star_pixels(spec, detector, truth, att)
    rate = np.full((sub.ysize, sub.xsize), spec.sky_rate, dtype=float)
    for x0, y0, f in zip(xs, ys, flux, strict=True):
        star = _psf(spec, sub, x0, y0, f)
        if star is not None:
            rate += star
    target = target_pixel_position(spec, exposure, detector)
    if target is None:
        return [rate] * spec.nints
    star = _psf(spec, sub, *target, spec.target_flux)
    if star is None:
        return [rate] * spec.nints
    return [rate + spec.target_flux_factor(i) * star for i in range(1, spec.nints + 1)]
