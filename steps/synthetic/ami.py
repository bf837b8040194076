"""A NIRISS aperture masking interferometry visit (NIS_AMI), written as level-1b uncal exposures.

Two exposures in the SUB80 subarray through the non-redundant mask (PUPIL
NRM) and F480M: the science target, then a point-source calibrator star
(IS_PSF), a few integrations each. image2 makes calints of them and
calwebb_ami3 fits fringes to each (ami_analyze) and divides the target's
observables by the calibrator's (ami_normalize).

The interferogram is computed here, independently of jwst's analytic fringe
model: a pixelated pupil of seven hexagonal holes (the NRM reference's
`nrm` array, `pupil_mask`) is Fourier transformed at each wavelength of the
filter (the THROUGHPUT reference's curve, `throughput_curve`), summed with
the curve's weights, integrated over each pixel and blurred by pointing
jitter. jwst's model leaves the jitter out, so the raw visibilities fall
with baseline (`jitter_visibility2` predicts by how much) and are restored
by the calibrator, which suffers the same jitter.

Geometry: the hole centres are those of the AMI mask as designed (the NRM
reference's NRM_X_A*/NRM_Y_A*). jwst mirrors them in x and turns them by a
quarter turn before modelling; in detector pixels (column, row) that is the
as-designed layout turned by half a turn, which is how `pupil_mask` draws it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.attitude import solve_attitude
from calstream.steps.synthetic.detector_noise import name_key, read_ramps, rng
from calstream.steps.synthetic.focal_plane import LinearAperture, Subarray
from calstream.steps.synthetic.level1b_wcs import set_fixed_pointing
from calstream.steps.synthetic.timing import ramp_timing
from calstream.steps.synthetic.uncal_files import UncalWriter
from calstream.steps.synthetic.visit import POINTING_CALCULATED, FixedSetup, VisitId

DETECTOR = "NIS"
SCA_NUM = 496
# SUB80 (science frame, 1-based): the corner of the detector holding the
# mask's field; its first 4 rows are reference pixels (ami_analyze drops them).
SUB80 = Subarray("SUB80", 1045, 1, 80, 80, fastaxis=-2, slowaxis=-1, noutputs=1)
REF_ROWS = 4
APERTURE = "NIS_AMI1"
PIXEL_SCALE = 0.0656  # arcsec/pixel
# NIS_AMI1 (SIAF, rounded): its reference pixel in SUB80 and V2/V3 there.
XREF, YREF = 45.0, 41.0
V2_REF, V3_REF = -290.1, -697.5
V3_IDL_YANGLE = -0.57
VIDL_PARITY = -1
SUB80_FRAME = LinearAperture(PIXEL_SCALE, XREF, YREF, V2_REF, V3_REF, V3_IDL_YANGLE, VIDL_PARITY)
FILTER = "F480M"
PUPIL = "NRM"
# F480M half-power points (m); the synthetic filter is flat between them.
BAND = (4.669e-6, 4.971e-6)
# The mask: hole centres as designed (m, pupil V2/V3-like frame), hole
# flat-to-flat size, and the pupil geometry jwst assumes (DIAM, PUPL_CRC).
HOLES = (
    (0.0, -2.64),
    (-2.28631, 0.0),
    (2.28631, -1.32),
    (-2.28631, 1.32),
    (-1.14315, 1.98),
    (2.28631, 1.32),
    (1.14315, 1.98),
)
HOLE_F2F = 0.82
PUPIL_DIAMETER = 6.559348
PUPIL_CIRCUMSCRIBED = 6.603464  # also the side of the pupil array jwst's bp_fix assumes
PUPIL_NPIX = 256
NIRISS_READOUT = {"NISRAPID": (1, 0), "NIS": (4, 0)}
TEMPLATE = "NIRISS Aperture Masking Interferometry"


@dataclass(frozen=True)
class NisVisit(VisitId):
    """What every synthetic NIRISS visit shares: the NIS detector as simulated
    (one file per exposure, no segments)."""

    dark_rate: float = 0.02
    bias_level: float = 12000.0
    gain: float = 1.6
    readnoise: float = 12.0
    saturation: float = 60000.0

    def exposure_name(self, exposure: int, detector: str = DETECTOR) -> ExposureName:
        return super().exposure_name(exposure, detector)

    def exposure_names(self) -> list[ExposureName]:
        return [self.exposure_name(e) for e in self.exposure_numbers]

    def segment_names(self, exposure: int, detector: str = DETECTOR) -> list[ExposureName]:
        return [self.exposure_name(exposure, detector)]

    def pool_rows(self, targets: dict[str, int]) -> list[dict[str, str]]:
        """The pool rows of the visit (`asn_pool`); `targets`: name -> TARGETID, updated.
        A mode says what differs per exposure: `target_of`, `exp_type`, `optics`, `is_psf`."""
        from calstream.steps.synthetic.asn_pool import _common, _flag

        rows = []
        for exposure in self.exposure_numbers:
            name = self.target_of(exposure)
            target_id = targets.setdefault(name, len(targets) + 1)
            filt, pupil = self.optics(exposure)
            row = _common(self, self.exposure_name(exposure), exposure, target_id)
            row.update({
                "TARGPROP": name, "TARGNAME": name, "EXP_TYPE": self.exp_type(exposure),
                "NEXPOSUR": str(len(self.exposure_numbers)), "INSTRUME": "NIRISS",
                "DETECTOR": DETECTOR, "TEMPLATE": self.TEMPLATE, "FILTER": filt, "PUPIL": pupil,
                "PATTTYPE": "NONE", "NUMDTHPT": "1", "APERNAME": self.APERTURE,
                "SUBARRAY": self.SUBARRAY.name, "IS_PSF": _flag(self.is_psf(exposure)),
                "TSOVISIT": "F", "EXSEGTOT": "1", "EXSEGNUM": "1",
            })
            rows.append(row)
        return rows


@dataclass(frozen=True)
class AmiSpec(FixedSetup, NisVisit):
    """One AMI visit: the science target (exposure 1) and its calibrator (exposure 2)."""

    READOUT_PATTERNS = NIRISS_READOUT
    DETECTOR, SUBARRAY, FILTER, PUPIL = DETECTOR, SUB80, FILTER, PUPIL
    APERTURE, TEMPLATE = APERTURE, TEMPLATE

    # The target (exposure 1) and its calibrator (exposure 2), one pointing each.
    target_ra: float = 53.1540  # deg
    target_dec: float = -27.8020
    target_name: str = "SYNTH-AMI-TARGET"
    psf_ra: float = 53.3010
    psf_dec: float = -27.6890
    psf_name: str = "SYNTH-AMI-CALIBRATOR"
    pa_v3: float = 293.5
    observation: str = "006"
    readpatt: str = "NISRAPID"
    ngroups: int = 5
    nints: int = 3
    visit_start: str = "2024-01-15T14:00:00.000"
    slew_seconds: float = 300.0
    seed: int = 2024
    # Total count rates (DN/s) of the two stars, and where each sits (SUB80
    # pixels, 1-based) relative to the aperture reference: not quite centred.
    target_flux: float = 2.0e6
    psf_flux: float = 2.6e6
    target_offset: tuple[float, float] = (0.21, -0.13)
    psf_offset: tuple[float, float] = (-0.17, 0.24)
    jitter_mas: float = 9.0  # Gaussian sigma of the pointing jitter, each axis
    sky_rate: float = 2.0  # DN/s per pixel

    @property
    def exposure_numbers(self) -> list[int]:
        return [1, 2]

    def is_psf(self, exposure: int) -> bool:
        return exposure == 2

    def star(self, exposure: int) -> tuple[str, float, float, float, tuple[float, float]]:
        """(name, RA, Dec, flux, pixel offset) of the star an exposure looks at."""
        if self.is_psf(exposure):
            return self.psf_name, self.psf_ra, self.psf_dec, self.psf_flux, self.psf_offset
        return (self.target_name, self.target_ra, self.target_dec, self.target_flux,
                self.target_offset)

    def validate(self) -> None:
        self.check_readpatt("NIRISS")
        if self.ngroups < 3 or self.nints < 2:
            # jump needs 3 groups; ami_analyze's outlier search needs a stack.
            raise ValueError("AMI needs ngroups >= 3 and nints >= 2")

    def target_of(self, exposure: int) -> str:
        return self.star(exposure)[0]

    def exp_type(self, exposure: int) -> str:
        return "NIS_AMI"

    def optics(self, exposure: int) -> tuple[str, str]:
        return FILTER, PUPIL

    def start_mjd(self) -> float:
        return exposure_timing(self, 1).start_mjd


# --- optics shared with the reference files ------------------------------------


def throughput_curve(n: int = 61) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength in m, throughput) of the synthetic F480M: flat in band, 0.1% outside."""
    lo, hi = BAND
    pad = 0.25 * (hi - lo)
    wave = np.linspace(lo - pad, hi + pad, n)
    return wave, np.where((wave >= lo) & (wave <= hi), 1.0, 0.001)


def pupil_mask(npix: int = PUPIL_NPIX) -> np.ndarray:
    """The mask in the pupil, [row, column] across PUPIL_CIRCUMSCRIBED metres (1: open).

    Hexagons with flat tops and bottoms, centred on the holes turned by half a
    turn (see the module docstring).
    """
    c = (np.arange(npix) - npix / 2 + 0.5) * PUPIL_CIRCUMSCRIBED / npix
    x, y = np.meshgrid(c, c)
    open_ = np.zeros((npix, npix), dtype=bool)
    for hx, hy in HOLES:
        dx, dy = x + hx, y + hy
        inside = np.ones_like(open_)
        for angle in np.radians((30.0, 90.0, 150.0)):
            inside &= np.abs(dx * math.cos(angle) + dy * math.sin(angle)) <= HOLE_F2F / 2
        open_ |= inside
    return open_.astype(np.float32)


def baseline_lengths() -> np.ndarray:
    """Lengths (m) of the 21 baselines between the holes."""
    h = np.asarray(HOLES)
    return np.array([np.hypot(*(h[i] - h[j])) for i in range(7) for j in range(i + 1, 7)])


def jitter_visibility2(baseline_m, jitter_mas: float, wavelength_m: float | None = None):
    """Squared visibility a Gaussian jitter of `jitter_mas` leaves on a baseline."""
    wave = wavelength_m or sum(BAND) / 2
    sigma = math.radians(jitter_mas / 3.6e6)
    u = np.asarray(baseline_m, dtype=float) / wave
    return np.exp(-4 * math.pi**2 * sigma**2 * u**2)


def interferogram(spec: AmiSpec, offset: tuple[float, float], *, oversample: int = 5) -> np.ndarray:
    """The star's image on SUB80 [row, column], summing to 1 (the part on the subarray).

    `offset`: (column, row) pixels of the star from the aperture reference point.
    """
    from scipy.ndimage import gaussian_filter

    pupil = pupil_mask()
    npix = pupil.shape[0]
    coords = (np.arange(npix) - npix / 2 + 0.5) * PUPIL_CIRCUMSCRIBED / npix
    n = SUB80.xsize * oversample
    pixel = math.radians(PIXEL_SCALE / 3600.0)
    fine = (np.arange(n) + 0.5) / oversample - 0.5  # 0-based pixel of each sub-pixel
    theta_x = (fine - (XREF - 1 + offset[0])) * pixel
    theta_y = (fine - (YREF - 1 + offset[1])) * pixel
    waves, weights = throughput_curve(25)
    image = np.zeros((n, n))
    for wave, weight in zip(waves, weights, strict=True):
        ex = np.exp(-2j * np.pi * np.outer(theta_x, coords) / wave)
        ey = np.exp(-2j * np.pi * np.outer(theta_y, coords) / wave)
        field = ey @ pupil @ ex.T
        # Each wavelength brings its share of photons, however wide its PSF.
        intensity = np.abs(field) ** 2
        image += weight * intensity / intensity.sum()
    image = gaussian_filter(image, spec.jitter_mas / 1000.0 / PIXEL_SCALE * oversample)
    binned = image.reshape(SUB80.ysize, oversample, SUB80.xsize, oversample).sum(axis=(1, 3))
    return binned / binned.sum()


# --- detector ---------------------------------------------------------------------


# The NIS detector in a corner subarray (SUB80 here, SUB128 for `wfss`): its
# first rows are reference pixels, its bias and response fixed per detector.


def reference_pixel_mask(sub: Subarray = SUB80) -> np.ndarray:
    mask = np.zeros((sub.ysize, sub.xsize), dtype=bool)
    mask[:REF_ROWS] = True
    return mask


def detector_bias(spec, sub: Subarray = SUB80) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 1)
    shape = (sub.ysize, sub.xsize)
    return (spec.bias_level + noise.normal(0.0, 30.0, shape)).astype(np.float32)


def detector_flat(spec, sub: Subarray = SUB80) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 2)
    flat = 1.0 + noise.normal(0.0, 0.005, (sub.ysize, sub.xsize))
    flat[reference_pixel_mask(sub)] = 1.0
    return flat.astype(np.float32)


def exposure_timing(spec, exposure: int, sub: Subarray = SUB80):
    tframe = sub.frame_time
    per_group = spec.nframes + spec.groupgap
    duration = spec.nints * ((spec.ngroups * per_group - spec.groupgap) + 1) * tframe
    return ramp_timing(spec, exposure, tframe, duration)


def write_nis_visit(out_dir: str | Path, spec, seed: int | None, *, sub: Subarray, stream: int,
                    rate: Callable[[int], np.ndarray],
                    populate: Callable[..., None]) -> list[Path]:
    """Write a NIS visit's uncal files, one per exposure: ``rate(exposure)``
    read up the ramp in ``sub`` (no per-integration bias drift: the NIS
    visits are simulated without one), noise from the mode's own ``stream``;
    ``populate(model, spec, exposure)`` writes the headers."""
    spec.validate()
    seed = spec.seed if seed is None else seed
    writer = UncalWriter(out_dir, exposure_timing(spec, spec.exposure_numbers[-1], sub).end_mjd)
    paths: list[Path] = []
    for exposure in spec.exposure_numbers:
        ramps = read_ramps(spec, [rate(exposure)] * spec.nints, flat=detector_flat(spec, sub),
                           refpix=reference_pixel_mask(sub), bias=detector_bias(spec, sub),
                           frame_time=sub.frame_time,
                           noise=rng(seed, stream, exposure, name_key(DETECTOR)), drift=False)
        paths.append(writer.write(ramps, lambda model, e=exposure: populate(model, spec, e)))
    return paths


def set_nis_metadata(m, spec, exposure: int, *, target, sub: Subarray, frame: LinearAperture,
                     aperture: str, title: str, template: str, exp_type: str) -> None:
    """The headers every NIS exposure shares, pointed at ``target`` (a spec
    whose target_ra/dec the attitude centres on ``frame``'s reference pixel);
    the caller sets the optics."""
    t = exposure_timing(spec, exposure, sub)
    att = solve_attitude(target, frame.v2_ref, frame.v3_ref)
    metadata.set_file(m, spec.exposure_name(exposure).filename(), title)
    metadata.set_observation(m, spec, exposure, t, template)
    metadata.set_visit(m, quality=POINTING_CALCULATED,
                       start_mjd=exposure_timing(spec, 1, sub).start_mjd,
                       total_exposures=len(spec.exposure_numbers), tsovisit=False)
    metadata.set_target(m, target, "POINT")
    m.instrument.name = "NIRISS"
    m.instrument.detector = DETECTOR
    metadata.set_exposure(m, spec, exposure, t, exp_type=exp_type, noutputs=sub.noutputs,
                          sca_num=SCA_NUM)
    metadata.set_subarray(m.subarray, sub)
    set_fixed_pointing(m, att, frame, sub, aperture=aperture, pps_aperture=aperture)


def _rate_image(spec: AmiSpec, exposure: int) -> np.ndarray:
    flux, offset = spec.star(exposure)[3:]
    rate = spec.sky_rate + flux * interferogram(spec, offset)
    rate[reference_pixel_mask()] = 0.0
    return rate


# --- headers ------------------------------------------------------------------------


def pixel_to_v2v3(x, y):
    """SUB80 pixel (1-based) to V2, V3 (arcsec): the linear DISTORTION reference."""
    return SUB80_FRAME.pixel_to_v2v3(x, y)


def _populate(model, spec: AmiSpec, exposure: int) -> None:
    name, ra, dec, _, _ = spec.star(exposure)
    star = dataclasses.replace(spec, target_ra=ra, target_dec=dec, target_name=name)
    set_nis_metadata(model.meta, spec, exposure, target=star, sub=SUB80, frame=SUB80_FRAME,
                     aperture=APERTURE, title="calstream synthetic NIRISS AMI",
                     template=TEMPLATE, exp_type="NIS_AMI")
    model.meta.instrument.filter = FILTER
    model.meta.instrument.pupil = PUPIL
    model.meta.exposure.psf_reference = spec.is_psf(exposure)


def simulate_ami(out_dir: str | Path, spec: AmiSpec = AmiSpec(), *,
                 seed: int | None = None) -> list[Path]:
    """Write the visit's uncal files (target, then calibrator) into `out_dir`."""
    return write_nis_visit(out_dir, spec, seed, sub=SUB80, stream=6,
                           rate=lambda exposure: _rate_image(spec, exposure), populate=_populate)
