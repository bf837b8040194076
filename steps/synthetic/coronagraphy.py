"""NIRCam round-mask coronagraphy (NRC_CORON): a science target and a PSF reference star.

Why this shape: calwebb_coron3 needs a science exposure and PSF-reference
exposures (IS_PSF) of the same optical path, each with several
integrations: stage 2 calibrates them as rateints -> calints, coron3
stacks the references (stack_refs), aligns them to the science (align_refs,
weighted by the PSFMASK reference), subtracts the star (klip), flags
outliers per integration and resamples the PSF-subtracted integrations.

The visit: the long-wave A detector behind MASKA335R with F335M, in the
SUB320A335R subarray (the smallest the real mode uses; 320 x 320 keeps
detector1 and KLIP quick). The science target (observation `observation`)
has a faint companion; the PSF reference star (observation
`psf_observation`, IS_PSF) is another, brighter star. APT joins the two
observations in one coronagraphy candidate (`candidate`); jwst's level-3
rule needs it, since neither observation alone has both member types.

The scene, in DN/s: each star is a Gaussian core plus a broad halo (the
diffraction wings a coronagraph does not remove), multiplied by the
occulter's transmission around the mask centre, 1 - exp(-r^2 / 2 w^2). Each
star sits a fraction of a pixel from the mask centre (a target acquisition
is never perfect), differently in the two observations, so the occulted
pattern differs slightly: align_refs has a shift to find and KLIP a real
residual. The companion is far enough out that the occulter barely dims it.
Plus a flat thermal sky. The PSFMASK reference is this same transmission map.

Geometry: a linear SIAF mapping for the full-frame long-wave A detector
(rounded values), the occulter at the subarray's centre, which is also the
aperture reference point of the WCS.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.attitude import sky_to_tel, solve_attitude, tel_to_sky, v1_pointing
from calstream.steps.synthetic.detector_noise import name_key, read_ramps, rng
from calstream.steps.synthetic.focal_plane import LinearAperture, Subarray, border_reference_pixels
from calstream.steps.synthetic.level1b_wcs import linear_wcs_keywords
from calstream.steps.synthetic.timing import ExposureTiming, ramp_timing
from calstream.steps.synthetic.uncal_files import UncalWriter
from calstream.steps.synthetic.visit import POINTING_CALCULATED, FixedSetup, VisitId

DETECTOR = "NRCALONG"
SCA_NUM = 485
FULL_SIZE = 2048
REFPIX_BORDER = 4
PIXEL_SCALE = 0.063  # arcsec/pixel, long-wave channel
# NRCA5_FULL (SIAF, rounded): V2/V3 of the full-frame reference pixel (1024.5, 1024.5).
V2_REF, V3_REF = 86.10, -493.23
V3_IDL_YANGLE = -0.12
VIDL_PARITY = -1
FULL_FRAME = LinearAperture(PIXEL_SCALE, (FULL_SIZE + 1) / 2, (FULL_SIZE + 1) / 2, V2_REF, V3_REF,
                            V3_IDL_YANGLE, VIDL_PARITY)
# Science frame = detector frame mirrored in x, as for the other odd A detectors.
FASTAXIS, SLOWAXIS = -1, 2
SUBARRAY = Subarray("SUB320A335R", 1, 1, 320, 320, FASTAXIS, SLOWAXIS, noutputs=1)
FILTER = "F335M"
PUPIL = "MASKRND"
CORONAGRAPH = "MASKA335R"
APERTURE = "NRCA5_MASK335R"
EXP_TYPE = "NRC_CORON"
TEMPLATE = "NIRCam Coronagraphic Imaging"
READOUT_PATTERNS = {"RAPID": (1, 0), "BRIGHT2": (2, 0), "MEDIUM8": (8, 2)}
# The occulter centre, 1-based subarray pixel: the aperture's reference point.
MASK_XREF, MASK_YREF = 160.5, 160.5
PHOTMJSR = 0.5  # MJy/sr per DN/s, the PHOTOM reference's F335M/MASKRND row


@dataclass(frozen=True)
class CoronSpec(FixedSetup, VisitId):
    """A coronagraphic science observation and its PSF-reference observation."""

    READOUT_PATTERNS = READOUT_PATTERNS
    DETECTOR, SUBARRAY, FILTER, PUPIL = DETECTOR, SUBARRAY, FILTER, PUPIL

    observation: str = "008"
    psf_observation: str = "009"
    visit_group: str = "01"
    candidate: str = "c1001"  # APT's coronagraphy candidate joining the two
    readpatt: str = "RAPID"
    ngroups: int = 5
    nints: int = 3  # science integrations
    psf_nints: int = 4  # PSF reference integrations: KLIP's basis
    target_ra: float = 53.1550  # deg
    target_dec: float = -27.7990
    target_name: str = "SYNTH-HOST-1"
    psf_ra: float = 53.3020
    psf_dec: float = -27.7010
    psf_name: str = "SYNTH-PSFREF-1"
    pa_v3: float = 293.5
    visit_start: str = "2024-01-15T15:00:00.000"
    slew_seconds: float = 600.0  # between the observations: a slew to the PSF star
    seed: int = 2024
    # Scene (DN/s, total per source before the occulter).
    star_flux: float = 2.0e6
    psf_star_flux: float = 3.0e6
    star_sigma: float = 0.9  # pixels, the diffraction core
    halo_fraction: float = 0.1
    halo_sigma: float = 6.0  # pixels
    occulter_width: float = 0.35  # arcsec, Gaussian width of the occulted region
    # Each star's offset from the mask centre (science-frame pixels).
    star_offset: tuple[float, float] = (0.06, -0.04)
    psf_star_offset: tuple[float, float] = (-0.04, 0.05)
    # The companion: ideal-frame offset from the host (arcsec) and its flux.
    companion_offset: tuple[float, float] = (0.70, 0.55)
    companion_flux: float = 2000.0
    sky_rate: float = 1.5
    # Detector, shared with the synthetic reference files.
    dark_rate: float = 0.03
    bias_level: float = 12000.0
    gain: float = 1.8
    readnoise: float = 9.0  # CDS
    saturation: float = 58000.0

    @property
    def exposure_numbers(self) -> list[int]:
        return [1]

    def observations(self) -> list[tuple[str, bool]]:
        """(observation number, is the PSF reference), in observing order."""
        return [(self.observation, False), (self.psf_observation, True)]

    def exposure_name(self, psf: bool = False) -> ExposureName:
        visit = VisitId(self.program, self.psf_observation if psf else self.observation,
                        self.visit, self.visit_group, self.sequence, self.activity)
        return visit.exposure_name(1, DETECTOR)

    def exposure_names(self) -> list[ExposureName]:
        return [self.exposure_name(psf) for _, psf in self.observations()]

    def segment_names(self, exposure: int, detector: str) -> list[ExposureName]:
        return self.exposure_names()

    def view(self, psf: bool) -> _Observation:
        """The science (or PSF) observation alone, as the shared header and pool writers read a spec."""
        return _Observation(self, psf, self.psf_nints if psf else self.nints)

    def validate(self) -> None:
        self.check_readpatt("NIRCam", 3, "need ngroups >= 3 for jump detection")
        if self.nints < 2 or self.psf_nints < 2:
            # coron3's outlier detection compares integrations.
            raise ValueError("need nints >= 2 and psf_nints >= 2")
        if self.observation == self.psf_observation:
            raise ValueError("the PSF reference is its own observation")


# --- optics ------------------------------------------------------------------


def pixel_to_v2v3(x_full, y_full):
    """Science-frame full-frame pixel (1-based) to V2, V3 (arcsec): the DISTORTION reference."""
    return FULL_FRAME.pixel_to_v2v3(x_full, y_full)


def v2v3_to_pixel(v2, v3):
    return FULL_FRAME.v2v3_to_pixel(v2, v3)


def occulter_transmission(spec: CoronSpec) -> np.ndarray:
    """Transmission of the round occulter over the subarray (the PSFMASK reference)."""
    yy, xx = np.mgrid[0 : SUBARRAY.ysize, 0 : SUBARRAY.xsize]
    r2 = ((xx - (MASK_XREF - 1)) ** 2 + (yy - (MASK_YREF - 1)) ** 2) * PIXEL_SCALE**2
    return (1.0 - np.exp(-r2 / (2.0 * spec.occulter_width**2))).astype(np.float32)


def _gaussian(x0: float, y0: float, sigma: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : SUBARRAY.ysize, 0 : SUBARRAY.xsize]
    s2 = 2.0 * sigma**2
    return np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / s2) / (math.pi * s2)


# --- pointing ----------------------------------------------------------------


def _attitude(spec: CoronSpec, psf: bool) -> np.ndarray:
    """Attitude putting the observation's star its offset away from the mask centre."""
    dx, dy = spec.psf_star_offset if psf else spec.star_offset
    x = SUBARRAY.xstart - 1 + MASK_XREF + dx
    y = SUBARRAY.ystart - 1 + MASK_YREF + dy
    v2, v3 = (float(v) for v in pixel_to_v2v3(x, y))
    ra, dec = (spec.psf_ra, spec.psf_dec) if psf else (spec.target_ra, spec.target_dec)
    return solve_attitude(_Target(spec.pa_v3, ra, dec), v2, v3)


@dataclass(frozen=True)
class _Target:
    """What `solve_attitude` reads: the position angle and the star to point at."""

    pa_v3: float
    target_ra: float
    target_dec: float


def _sky_to_subarray(att: np.ndarray, ra: float, dec: float) -> tuple[float, float]:
    x, y = v2v3_to_pixel(*sky_to_tel(att, ra, dec))
    return float(x) - SUBARRAY.xstart, float(y) - SUBARRAY.ystart


@dataclass(frozen=True)
class CoronTruth:
    """What `simulate_coronagraphy` injected (0-based subarray pixels, DN/s)."""

    star_xy: tuple[float, float]  # the host star in the science exposure
    psf_star_xy: tuple[float, float]  # the reference star in the PSF exposure
    companion_xy: tuple[float, float]
    companion_radec: tuple[float, float]
    # The companion's rate after the occulter (its transmission at the companion).
    companion_rate: float
    sky_rate: float


def companion_radec(spec: CoronSpec) -> tuple[float, float]:
    """The companion on the sky: its ideal-frame offset from the host, seen at the
    science attitude (PA_V3 fixed, so the offset is fixed on the sky too)."""
    att = _attitude(spec, psf=False)
    hx, hy = _sky_to_subarray(att, spec.target_ra, spec.target_dec)
    cx = SUBARRAY.xstart + hx + spec.companion_offset[0] / PIXEL_SCALE
    cy = SUBARRAY.ystart + hy + spec.companion_offset[1] / PIXEL_SCALE
    ra, dec = tel_to_sky(att, *pixel_to_v2v3(cx, cy))
    return float(ra), float(dec)


def coron_truth(spec: CoronSpec = CoronSpec()) -> CoronTruth:
    sci, ref = _attitude(spec, psf=False), _attitude(spec, psf=True)
    ra, dec = companion_radec(spec)
    cx, cy = _sky_to_subarray(sci, ra, dec)
    r2 = ((cx - (MASK_XREF - 1)) ** 2 + (cy - (MASK_YREF - 1)) ** 2) * PIXEL_SCALE**2
    return CoronTruth(
        star_xy=_sky_to_subarray(sci, spec.target_ra, spec.target_dec),
        psf_star_xy=_sky_to_subarray(ref, spec.psf_ra, spec.psf_dec),
        companion_xy=(cx, cy),
        companion_radec=(ra, dec),
        companion_rate=spec.companion_flux * (1.0 - math.exp(-r2 / (2 * spec.occulter_width**2))),
        sky_rate=spec.sky_rate,
    )


def exposure_timing(spec: CoronSpec, psf: bool) -> ExposureTiming:
    nints = spec.psf_nints if psf else spec.nints
    per_group = spec.nframes + spec.groupgap
    tframe = SUBARRAY.frame_time
    duration = (nints * (spec.ngroups * per_group - spec.groupgap) + nints) * tframe
    # Both observations have one exposure; the PSF one follows the science's.
    # ramp_timing spaces exposures by the first one's duration plus the slew.
    first = (spec.nints * (spec.ngroups * per_group - spec.groupgap) + spec.nints) * tframe
    timing = ramp_timing(spec.view(psf), 2 if psf else 1, tframe, first)
    if not psf:
        return timing
    end = timing.start_mjd + duration / 86400.0
    return dataclasses.replace(timing, duration=round(duration, 5),
                               mid_mjd=(timing.start_mjd + end) / 2, end_mjd=end)


# --- pixels --------------------------------------------------------------------


def reference_pixel_mask() -> np.ndarray:
    return border_reference_pixels(SUBARRAY, FULL_SIZE, REFPIX_BORDER)


def detector_bias(spec: CoronSpec) -> np.ndarray:
    # Fixed per detector, not per seed: the SUPERBIAS reference is this map.
    noise = rng(name_key(DETECTOR), 1)
    cols = noise.normal(0.0, 25.0, SUBARRAY.xsize)
    pix = noise.normal(0.0, 40.0, (SUBARRAY.ysize, SUBARRAY.xsize))
    return (spec.bias_level + cols[None, :] + pix).astype(np.float32)


def detector_flat(spec: CoronSpec) -> np.ndarray:
    """Pixel response (reference pixels: 1); the FLAT reference is this map."""
    noise = rng(name_key(DETECTOR), 2)
    yy, xx = np.mgrid[0 : SUBARRAY.ysize, 0 : SUBARRAY.xsize] / SUBARRAY.xsize
    flat = 1.0 + 0.02 * (xx - 0.5) + noise.normal(0.0, 0.01, xx.shape)
    flat[reference_pixel_mask()] = 1.0
    return flat.astype(np.float32)


def _star_image(spec: CoronSpec, x0: float, y0: float, flux: float) -> np.ndarray:
    core = (1.0 - spec.halo_fraction) * _gaussian(x0, y0, spec.star_sigma)
    halo = spec.halo_fraction * _gaussian(x0, y0, spec.halo_sigma)
    return flux * (core + halo) * occulter_transmission(spec)


def rate_image(spec: CoronSpec, psf: bool) -> np.ndarray:
    """Photon rate (DN/s) per pixel of the science (or PSF reference) exposure."""
    truth = coron_truth(spec)
    if psf:
        rate = _star_image(spec, *truth.psf_star_xy, spec.psf_star_flux)
    else:
        rate = _star_image(spec, *truth.star_xy, spec.star_flux)
        rate += truth.companion_rate * _gaussian(*truth.companion_xy, spec.star_sigma)
    rate += spec.sky_rate
    rate[reference_pixel_mask()] = 0.0
    return rate


# --- headers ---------------------------------------------------------------------


def _wcs_keywords(att: np.ndarray) -> dict:
    def subarray_to_v2v3(x, y):
        return pixel_to_v2v3(x + SUBARRAY.xstart - 1, y + SUBARRAY.ystart - 1)

    return linear_wcs_keywords(att, subarray_to_v2v3, crpix=(MASK_XREF, MASK_YREF),
                               size=(SUBARRAY.xsize, SUBARRAY.ysize), pixel_scale=PIXEL_SCALE,
                               vparity=VIDL_PARITY, v3yangle=V3_IDL_YANGLE)


def _populate(model, spec: CoronSpec, psf: bool) -> None:
    m = model.meta
    t = exposure_timing(spec, psf)
    att = _attitude(spec, psf)
    obs = spec.view(psf)
    metadata.set_file(m, spec.exposure_name(psf).filename(), "calstream synthetic NIRCam coronagraphy")
    metadata.set_observation(m, obs, 1, t, TEMPLATE)
    metadata.set_visit(m, quality=POINTING_CALCULATED, start_mjd=t.start_mjd,
                       total_exposures=1, tsovisit=False)
    metadata.set_target(m, obs, "POINT")

    i = m.instrument
    i.name = "NIRCAM"
    i.detector = DETECTOR
    i.module = "A"
    i.channel = "LONG"
    i.filter = FILTER
    i.pupil = PUPIL
    i.coronagraph = CORONAGRAPH

    metadata.set_exposure(m, obs, 1, t, exp_type=EXP_TYPE, noutputs=SUBARRAY.noutputs,
                          sca_num=SCA_NUM)
    m.exposure.psf_reference = psf
    metadata.set_subarray(m.subarray, SUBARRAY)
    metadata.set_dither(m, pattern="NONE", points=1, total=1, position=1, offset=(0.0, 0.0))
    metadata.set_pointing(m, aperture=APERTURE, pps_aperture=APERTURE, wcs=_wcs_keywords(att),
                          v1=v1_pointing(att))


# What the PSF-reference observation reads instead of the science one's field.
_PSF_FIELDS = {"observation": "psf_observation", "target_ra": "psf_ra",
               "target_dec": "psf_dec", "target_name": "psf_name"}


@dataclass(frozen=True)
class _Observation:
    """One of the two observations (`CoronSpec.view`)."""

    spec: CoronSpec
    psf: bool
    nints: int

    def __getattr__(self, name):
        if self.psf and name in _PSF_FIELDS:
            name = _PSF_FIELDS[name]
        return getattr(self.spec, name)


def simulate_coronagraphy(out_dir: str | Path, spec: CoronSpec = CoronSpec(), *,
                          seed: int | None = None) -> list[Path]:
    """Write the science and PSF-reference uncal files into `out_dir`, in observing order."""
    spec.validate()
    seed = spec.seed if seed is None else seed
    writer = UncalWriter(out_dir, exposure_timing(spec, True).end_mjd)
    paths: list[Path] = []
    for n, (_, psf) in enumerate(spec.observations(), start=1):
        nints = spec.psf_nints if psf else spec.nints
        ramps = read_ramps(spec, [rate_image(spec, psf)] * nints, flat=detector_flat(spec),
                           refpix=reference_pixel_mask(), bias=detector_bias(spec),
                           frame_time=SUBARRAY.frame_time, noise=rng(seed, 4, n, name_key(DETECTOR)))
        paths.append(writer.write(ramps, lambda model, psf=psf: _populate(model, spec, psf)))
    return paths
