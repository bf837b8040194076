"""A MIRI LRS fixed-slit visit (MIR_LRS-FIXEDSLIT), written as level-1b uncal exposures.

Why this mode: of the spectroscopic modes calstream must carry through
spec2 (MIRI LRS slit, NIRCam/MIRI WFSS, NIRSpec fixed slit), it is the one
whose calibration is self-contained in a few small tables. Its WCS is the
imager distortion plus one wavelength table (SPECWCS); its spec2 makes every
product a slit mode makes (cal, s2d, x1d) without a direct image, source
catalog or segmentation map (WFSS needs image3 first) and without the dozen
optical-model references of NIRSpec (camera, collimator, disperser, fore,
fpa, msa, ote, wavecorr, ...). Its detector1 is the MIRI one (reset, rscd,
lastframe, reference columns), which the NIRCam imaging does not exercise.

References it needs (see `spec_references`): detector1 asks for mask,
saturation, ipc, rscd, linearity, dark, reset, gain and readnoise; spec2 for
distortion, filteroffset, specwcs, flat, pathloss, photom, area, extract1d,
apcorr and psf. Every other type is N/A for MIRI in the synthetic context, as
real CRDS has them for this mode (NIRSpec/NIRISS/MRS/WFSS-only types,
superbias and the IRS2/SIRS refpix types of the near-infrared detectors);
emicorr, firstframe, persistence, charge_migration, picture_frame,
clean_flicker_noise, targ_centroid, residual_fringe, pixel_replace and
adaptive_trace_model are skipped by jwst's defaults.

The visit: a point source nodded along the slit (PATTTYPE ALONG-SLIT-NOD,
two exposures, each the other's background), in FULL frame (the slit lies
in the imager field; LRS slit data are always full frame), FASTR1. The
scene is the source's spectrum through the slit (its loss is the PATHLOSS
reference's inverse), a thermal background filling the slit, and a faint
glow elsewhere. The flux chain is built backwards from the references, so
x1d should return `source_flux_jy` (see `lrs_truth`).

Geometry: MIRIM_FULL with a linear distortion (the imager's SIAF values,
rounded) and the LRS slit reference point jwst itself uses (326.13, 300.7);
the dispersion is a smooth prism-like curve from 5 um at row 395 to 14 um at
row 45 (0-based), the same table `spec_references` writes as SPECWCS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.attitude import sky_to_tel, solve_attitude, v1_pointing
from calstream.steps.synthetic.detector_noise import name_key, read_ramps, rng
from calstream.steps.synthetic.focal_plane import LinearAperture, Subarray
from calstream.steps.synthetic.level1b_wcs import linear_wcs_keywords
from calstream.steps.synthetic.timing import ExposureTiming, ramp_timing
from calstream.steps.synthetic.uncal_files import UncalWriter
from calstream.steps.synthetic.visit import (
    POINTING_CALCULATED,
    POINTING_PLANNED,
    FixedSetup,
    VisitId,
)

DETECTOR = "MIRIMAGE"
NX, NY = 1032, 1024  # science frame, FULL
# MIRI reads through four interleaved outputs. (Its frame times are FRAME_TIMES,
# not the NIRCam clocking `Subarray.frame_time` assumes.)
FULL_FRAME = Subarray("FULL", 1, 1, NX, NY, fastaxis=1, slowaxis=2, noutputs=4)
REF_COLUMNS = 4  # reference pixels: the first and last 4 columns
PIXEL_SCALE = 0.11  # arcsec/pixel
# MIRIM_FULL (SIAF, rounded): reference pixel (1-based) and its V2/V3.
FULL_XREF, FULL_YREF = 516.5, 512.5
V2_REF, V3_REF = -453.363, -374.069
V3_IDL_YANGLE = 4.834  # deg
VIDL_PARITY = -1
IMAGER = LinearAperture(PIXEL_SCALE, FULL_XREF, FULL_YREF, V2_REF, V3_REF, V3_IDL_YANGLE,
                        VIDL_PARITY)
# MIRIM_SLIT reference point (1-based science pixel), as jwst's targ_centroid quotes it.
SLIT_XREF, SLIT_YREF = 326.13, 300.7
SLIT_WIDTH = 0.51  # arcsec, across the slit (along the dispersion, detector y)
SLIT_LENGTH = 4.7  # arcsec, along the slit (detector x)
FILTER = "P750L"
APERTURE = "MIRIM_SLIT"
# Dispersion: wavelength range and the 0-based rows it spans (short end at the top).
WAVE_SHORT, WAVE_LONG = 5.0, 14.0  # um
ROW_SHORT, ROW_LONG = 395.0, 45.0
# MIRI readout patterns: (frames per group, frames skipped), as NIRCam's table.
READOUT_PATTERNS = {"FASTR1": (1, 0), "FAST": (1, 0), "SLOWR1": (1, 0)}
FRAME_TIMES = {"FASTR1": 2.77504, "FAST": 2.77504, "SLOWR1": 23.88864}  # FULL, seconds
# Photometric calibration (the PHOTOM reference): MJy/sr per DN/s at the peak
# response, and the response's shape.
PHOTMJSR = 60.0
RESPONSE_PEAK, RESPONSE_WIDTH = 7.5, 3.5  # um


@dataclass(frozen=True)
class LrsSpec(FixedSetup, VisitId):
    """One MIRI LRS fixed-slit visit: a point source nodded along the slit."""

    READOUT_PATTERNS = READOUT_PATTERNS
    DETECTOR, SUBARRAY, FILTER = DETECTOR, FULL_FRAME, FILTER

    observation: str = "003"
    # The source and how the visit points at it.
    target_name: str = "SYNTH-STAR-LRS"
    target_ra: float = 53.1711  # deg
    target_dec: float = -27.7850
    pa_v3: float = 293.5
    nods: int = 2
    nod_offset: float = 1.0  # arcsec along the slit from its centre, each way
    planned: tuple[int, ...] = ()
    planned_pointing_error: tuple[float, float] = (0.3, -0.2)  # ideal arcsec
    # Readout and timing.
    readpatt: str = "FASTR1"
    ngroups: int = 6
    nints: int = 1
    visit_start: str = "2024-01-15T10:00:00.000"
    slew_seconds: float = 30.0
    seed: int = 2024
    # Scene: F_nu = source_flux * (lambda / 10 um) ** spectral_index.
    source_flux: float = 0.010  # Jy at 10 um
    spectral_index: float = -2.0  # Rayleigh-Jeans
    psf_fwhm_10um: float = 0.33  # arcsec, diffraction-limited: scales with wavelength
    slit_background: float = 2.0  # DN/s per pixel at 10 um, rising to the red
    field_background: float = 0.2  # DN/s per pixel outside the slit
    # Detector, shared with the synthetic reference files.
    dark_rate: float = 0.05  # DN/s
    bias_level: float = 10000.0  # DN
    gain: float = 3.1  # e-/DN
    readnoise: float = 8.0  # DN, CDS
    saturation: float = 60000.0  # DN, raw

    @property
    def exposure_numbers(self) -> list[int]:
        return list(range(1, self.nods + 1))

    def exposure_name(self, exposure: int, detector: str = DETECTOR) -> ExposureName:
        return super().exposure_name(exposure, detector)

    def exposure_names(self) -> list[ExposureName]:
        return [self.exposure_name(e) for e in self.exposure_numbers]

    def pointing_quality(self, exposure: int) -> str:
        return POINTING_PLANNED if exposure in self.planned else POINTING_CALCULATED

    def nod_position(self, exposure: int) -> float:
        """Along-slit offset (arcsec, ideal X) of the source in a nod: -, +, -, + ..."""
        return self.nod_offset * (-1 if exposure % 2 else 1)

    def validate(self) -> None:
        # rscd flags the first group and lastframe the last: jump needs 3 more.
        self.check_readpatt("MIRI", 5, "MIRI needs ngroups >= 5")
        if self.nints < 1 or self.nods < 1:
            raise ValueError("need nints >= 1, nods >= 1")
        if abs(self.nod_offset) > SLIT_LENGTH / 2 - 0.5:
            raise ValueError("the nods must keep the source in the slit")
        bad = set(self.planned) - set(self.exposure_numbers)
        if bad:
            raise ValueError(f"planned exposures {sorted(bad)} are not in the visit")


# --- optics shared with the reference files --------------------------------


def pixel_to_v2v3(x, y):
    """Science-frame full-frame pixel (1-based) to V2, V3 (arcsec): the linear DISTORTION."""
    return IMAGER.pixel_to_v2v3(x, y)


def v2v3_to_pixel(v2, v3):
    return IMAGER.v2v3_to_pixel(v2, v3)


def wavelength_at_row(y):
    """Wavelength (um) dispersed onto 0-based row `y` (NaN off the spectrum).

    Prism-like: the dispersion (um per row) falls fourfold from 5 to 14 um.
    """
    u = (ROW_SHORT - np.asarray(y, dtype=float)) / (ROW_SHORT - ROW_LONG)
    wave = WAVE_SHORT + (WAVE_LONG - WAVE_SHORT) * (1.6 * u - 0.6 * u**2)
    return np.where((u >= 0) & (u <= 1), wave, np.nan)


def trace_offset(y):
    """Trace x offset (pixels) from the slit reference column, by 0-based row: a gentle bow."""
    return 0.8 * ((np.asarray(y, dtype=float) - (SLIT_YREF - 1)) / 200.0) ** 2


def psf_sigma(wave, fwhm_10um: float):
    """Gaussian sigma (arcsec) of the diffraction-limited PSF: the FWHM scales with wavelength."""
    return fwhm_10um * np.asarray(wave, dtype=float) / 10.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def slit_throughput(wave, fwhm_10um: float, offset_across: float = 0.0):
    """Fraction of a point source's light through the slit (1-D Gaussian across it).

    `offset_across`: the source's distance from the slit's centre line, arcsec.
    """
    from scipy.special import erf

    sigma = psf_sigma(wave, fwhm_10um)
    half = SLIT_WIDTH / 2
    root2 = math.sqrt(2.0)
    return 0.5 * (
        erf((half - offset_across) / (sigma * root2)) + erf((half + offset_across) / (sigma * root2))
    )


def relative_response(wave):
    """The PHOTOM reference's RELRESPONSE: conversion relative to PHOTMJSR (1 at the peak)."""
    w = np.asarray(wave, dtype=float)
    return 1.0 / np.exp(-0.5 * ((w - RESPONSE_PEAK) / RESPONSE_WIDTH) ** 2)


def pixel_area_sr() -> float:
    return (PIXEL_SCALE / 3600.0 * math.pi / 180.0) ** 2


# --- truth, timing, pointing -------------------------------------------------


@dataclass(frozen=True)
class LrsTruth:
    wavelength: np.ndarray  # um, the rows' wavelengths (increasing)
    source_flux_jy: np.ndarray  # F_nu injected at those wavelengths
    pointing_quality: dict[int, str]


def source_flux_jy(spec: LrsSpec, wave):
    return spec.source_flux * (np.asarray(wave, dtype=float) / 10.0) ** spec.spectral_index


def lrs_truth(spec: LrsSpec = LrsSpec()) -> LrsTruth:
    rows = np.arange(int(ROW_LONG), int(ROW_SHORT) + 1)
    wave = wavelength_at_row(rows)[::-1]
    return LrsTruth(
        wavelength=wave,
        source_flux_jy=source_flux_jy(spec, wave),
        pointing_quality={e: spec.pointing_quality(e) for e in spec.exposure_numbers},
    )


def exposure_timing(spec: LrsSpec, exposure: int) -> ExposureTiming:
    tframe = FRAME_TIMES[spec.readpatt]
    tint = (spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap) * tframe
    # FASTR1: one reset frame before each integration.
    return ramp_timing(spec, exposure, tframe, duration=spec.nints * (tint + tframe))


def _attitude(spec: LrsSpec, along_slit: float, across_slit: float = 0.0) -> np.ndarray:
    """Attitude putting the target `along_slit`/`across_slit` arcsec from the slit reference."""
    v2t, v3t = (
        float(v)
        for v in pixel_to_v2v3(
            SLIT_XREF + along_slit / PIXEL_SCALE, SLIT_YREF + across_slit / PIXEL_SCALE
        )
    )
    return solve_attitude(spec, v2t, v3t)


def source_pixel_position(spec: LrsSpec, exposure: int) -> tuple[float, float]:
    """Where the source truly is at the slit reference row: 0-based x, y."""
    att = _attitude(spec, spec.nod_position(exposure))
    x, y = v2v3_to_pixel(*sky_to_tel(att, spec.target_ra, spec.target_dec))
    return float(x) - 1, float(y) - 1


# --- pixels -------------------------------------------------------------------


def detector_bias(spec: LrsSpec) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 1)
    cols = noise.normal(0.0, 30.0, NX)
    return (spec.bias_level + cols[None, :] + noise.normal(0.0, 40.0, (NY, NX))).astype(np.float32)


def detector_flat(spec: LrsSpec) -> np.ndarray:
    """Pixel response (reference columns: 1); the FLAT reference is this same map."""
    noise = rng(name_key(DETECTOR), 2)
    yy, xx = np.mgrid[0:NY, 0:NX]
    flat = 1.0 + 0.02 * (xx / NX - 0.5) + noise.normal(0.0, 0.01, (NY, NX))
    flat[reference_pixel_mask()] = 1.0
    return flat.astype(np.float32)


def reference_pixel_mask() -> np.ndarray:
    cols = np.arange(NX)
    edge = (cols < REF_COLUMNS) | (cols >= NX - REF_COLUMNS)
    return np.broadcast_to(edge[None, :], (NY, NX)).copy()


def _rate_image(spec: LrsSpec, exposure: int) -> np.ndarray:
    """Photon rate (DN/s) per pixel: source through the slit, slit background, field glow."""
    from scipy.special import erf

    rows = np.arange(NY)
    wave = wavelength_at_row(rows)
    lit = np.isfinite(wave)
    rate = np.full((NY, NX), spec.field_background)
    x_src, _ = source_pixel_position(spec, exposure)
    # The source's light per row, built backwards through photom, pathloss and extract_1d.
    w = wave[lit]
    conversion = PHOTMJSR * relative_response(w)
    per_row = (
        source_flux_jy(spec, w)
        * slit_throughput(w, spec.psf_fwhm_10um)
        / (conversion * pixel_area_sr() * 1e6)
    )
    sigma = psf_sigma(w, spec.psf_fwhm_10um) / PIXEL_SCALE
    centre = x_src + trace_offset(rows[lit])
    edges = np.arange(NX + 1) - 0.5
    cdf = 0.5 * (1 + erf((edges[None, :] - centre[:, None]) / (sigma[:, None] * math.sqrt(2))))
    rate[lit] += per_row[:, None] * np.diff(cdf, axis=1)
    # The slit, filled by the thermal background, rising to the red.
    slit_centre = SLIT_XREF - 1 + trace_offset(rows[lit])
    half = SLIT_LENGTH / 2 / PIXEL_SCALE
    in_slit = np.abs(np.arange(NX)[None, :] - slit_centre[:, None]) < half
    bkg = spec.slit_background * (w / 10.0) ** 3
    rate[lit] += np.where(in_slit, bkg[:, None], 0.0)
    rate[reference_pixel_mask()] = 0.0
    return rate


# --- headers ------------------------------------------------------------------


def _wcs_keywords(att: np.ndarray) -> dict:
    # A linear imaging WCS at the slit reference, as level-1b files carry.
    return linear_wcs_keywords(att, pixel_to_v2v3, crpix=(SLIT_XREF, SLIT_YREF), size=(NX, NY),
                               pixel_scale=PIXEL_SCALE, vparity=VIDL_PARITY,
                               v3yangle=V3_IDL_YANGLE)


def _populate(model, spec: LrsSpec, exposure: int) -> None:
    m = model.meta
    t = exposure_timing(spec, exposure)
    quality = spec.pointing_quality(exposure)
    offset = spec.nod_position(exposure)
    if quality == POINTING_PLANNED:
        ex, ey = spec.planned_pointing_error
        att = _attitude(spec, offset + ex, ey)
    else:
        att = _attitude(spec, offset)

    metadata.set_file(m, spec.exposure_name(exposure).filename(), "calstream synthetic MIRI LRS")
    metadata.set_observation(m, spec, exposure, t, "MIRI Low Resolution Spectroscopy")
    metadata.set_visit(
        m,
        quality=quality,
        start_mjd=exposure_timing(spec, 1).start_mjd,
        total_exposures=spec.nods,
        tsovisit=False,
    )
    metadata.set_target(m, spec, "POINT")

    i = m.instrument
    i.name = "MIRI"
    i.detector = DETECTOR
    i.filter = FILTER

    metadata.set_exposure(
        m, spec, exposure, t, exp_type="MIR_LRS-FIXEDSLIT", noutputs=FULL_FRAME.noutputs, sca_num=493
    )
    metadata.set_subarray(m.subarray, FULL_FRAME)
    metadata.set_dither(
        m,
        pattern="ALONG-SLIT-NOD",
        points=spec.nods,
        total=spec.nods,
        position=exposure,
        offset=(offset, 0.0),
    )
    metadata.set_pointing(
        m, aperture=APERTURE, pps_aperture=APERTURE, wcs=_wcs_keywords(att), v1=v1_pointing(att)
    )


def simulate_lrs(
    out_dir: str | Path, spec: LrsSpec = LrsSpec(), *, seed: int | None = None
) -> list[Path]:
    """Write the visit's uncal files (one per nod) into `out_dir`, in observing order."""
    spec.validate()
    seed = spec.seed if seed is None else seed
    writer = UncalWriter(out_dir, exposure_timing(spec, spec.nods).end_mjd)
    paths: list[Path] = []
    for exposure in spec.exposure_numbers:
        # Every MIRI pattern here reads each frame once (one frame per group, no gap).
        ramps = read_ramps(spec, [_rate_image(spec, exposure)] * spec.nints,
                           flat=detector_flat(spec), refpix=reference_pixel_mask(),
                           bias=detector_bias(spec), frame_time=FRAME_TIMES[spec.readpatt],
                           noise=rng(seed, 3, exposure, name_key(DETECTOR)))
        paths.append(writer.write(ramps, lambda model, e=exposure: _populate(model, spec, e)))
    return paths
