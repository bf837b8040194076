"""A NIRISS wide field slitless spectroscopy visit (NIS_WFSS), as level-1b uncal exposures.

Why NIRISS: its detector1 and imaging references already exist here (the
AMI visit reads the same NIS detector), its grism WCS needs one detector and
one dispersion table, and its direct image is ordinary NIS_IMAGE imaging:
image2 -> image3 makes the i2d, source catalog and segmentation map the
grism's spec2 takes as `direct_image`, `sourcecat` and `segmap` members.

The visit (observation 011): exposure 1 is the direct image (FILTER CLEAR,
PUPIL F150W), exposure 2 the dispersed image (FILTER GR150C, the grism that
disperses along rows, PUPIL F150W) at the same pointing. A few stars of the
field are point sources in the direct image and first-order spectra in the
grism image, traced where the dispersion reference (`wfss_references`)
puts them: x = x0 + TRACE_START + TRACE_LENGTH * t, y = y0, t running 0..1
over WAVE_RANGE. Only the first order is simulated and described.

SUB128 keeps it tiny (real NIRISS WFSS reads FULL; jwst's WFSS code works in
the subarray's own pixels, so the geometry is the same at any size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import ami
from calstream.steps.synthetic.focal_plane import LinearAperture, Subarray
from calstream.steps.synthetic.visit import FixedSetup

DETECTOR, SCA_NUM = ami.DETECTOR, ami.SCA_NUM
# SUB128 (science frame, 1-based) in the detector corner; its first rows are
# reference pixels, as in the AMI subarray.
SUB128 = Subarray("SUB128", 1921, 1, 128, 128, fastaxis=-2, slowaxis=-1, noutputs=1)
REF_ROWS = ami.REF_ROWS
APERTURE = "NIS_SUB128"
PIXEL_SCALE = 0.0656  # arcsec/pixel
XREF, YREF = 64.5, 64.5  # the aperture reference pixel (1-based, subarray frame)
V2_REF, V3_REF = -307.7, -723.4
V3_IDL_YANGLE = -0.57
VIDL_PARITY = -1
FRAME = LinearAperture(PIXEL_SCALE, XREF, YREF, V2_REF, V3_REF, V3_IDL_YANGLE, VIDL_PARITY)
DIRECT_FILTER, GRISM = "CLEAR", "GR150C"
PUPIL = "F150W"  # the blocking filter, in the pupil wheel
FWCPOS = 0.0  # filter wheel position; the dispersion reference's fwcpos_ref: no rotation
# First order: wavelengths (micron) from t=0 to t=1, and the trace along x (pixels).
WAVE_RANGE = (1.30, 1.70)
TRACE_START, TRACE_LENGTH = 8.0, 60.0
BAND = (1.33, 1.67)  # the blocking filter: flat between, dark outside
STAR_SIGMA = 1.1  # pixels, Gaussian PSF and cross-dispersion profile
TEMPLATE = "NIRISS Wide Field Slitless Spectroscopy"


@dataclass(frozen=True)
class WfssSpec(FixedSetup, ami.NisVisit):
    """One NIRISS WFSS visit: the direct image (exposure 1) and the grism image (exposure 2)."""

    READOUT_PATTERNS = ami.NIRISS_READOUT
    DETECTOR, SUBARRAY, FILTER, PUPIL = DETECTOR, SUB128, GRISM, PUPIL
    APERTURE, TEMPLATE = APERTURE, TEMPLATE

    target_ra: float = 53.1210  # deg: the field centre (aperture reference)
    target_dec: float = -27.8110
    target_name: str = "SYNTH-WFSS-FIELD"
    pa_v3: float = 293.5
    observation: str = "011"
    readpatt: str = "NISRAPID"
    ngroups: int = 3
    nints: int = 1
    visit_start: str = "2024-01-15T16:00:00.000"
    slew_seconds: float = 120.0
    seed: int = 2026
    # The stars: 0-based subarray pixel (x, y) and total count rate (DN/s)
    # through F150W. Traces reach x + TRACE_START + TRACE_LENGTH < 128, and
    # are far enough apart in y not to overlap.
    stars: tuple[tuple[float, float, float], ...] = (
        (22.3, 30.6, 60000.0), (38.7, 63.2, 45000.0), (51.4, 97.8, 52000.0))
    sky_rate: float = 1.0  # DN/s per pixel

    @property
    def exposure_numbers(self) -> list[int]:
        return [1, 2]

    def is_grism(self, exposure: int) -> bool:
        return exposure == 2

    def is_psf(self, exposure: int) -> bool:
        return False

    def target_of(self, exposure: int) -> str:
        return self.target_name

    def exp_type(self, exposure: int) -> str:
        return "NIS_WFSS" if self.is_grism(exposure) else "NIS_IMAGE"

    def optics(self, exposure: int) -> tuple[str, str]:
        """(FILTER, PUPIL) of an exposure."""
        return (GRISM if self.is_grism(exposure) else DIRECT_FILTER), PUPIL

    def validate(self) -> None:
        self.check_readpatt("NIRISS", 3, "jump needs at least 3 groups")
        for x, y, _ in self.stars:
            if not (0 <= x and x + TRACE_START + TRACE_LENGTH < SUB128.xsize - 1
                    and REF_ROWS + 4 <= y < SUB128.ysize - 4):
                raise ValueError(f"a star at ({x}, {y}) puts its spectrum off SUB128")

    def start_mjd(self) -> float:
        return exposure_timing(self, 1).start_mjd


# --- the dispersion, shared with the references -----------------------------------


def wavelength_of(t):
    """First-order wavelength (micron) at trace parameter t (the SPECWCS displ)."""
    return WAVE_RANGE[0] + (WAVE_RANGE[1] - WAVE_RANGE[0]) * np.asarray(t)


def trace_offset(t):
    """Offset (dx, dy) in pixels of the first-order trace from the direct-image
    position at trace parameter t (the SPECWCS dispx, dispy)."""
    return TRACE_START + TRACE_LENGTH * np.asarray(t), 0.0 * np.asarray(t)


def band_throughput(wavelength) -> np.ndarray:
    w = np.asarray(wavelength)
    return np.where((w >= BAND[0]) & (w <= BAND[1]), 1.0, 0.0)


# --- the scene ----------------------------------------------------------------------


def reference_pixel_mask() -> np.ndarray:
    return ami.reference_pixel_mask(SUB128)


def detector_bias(spec: WfssSpec) -> np.ndarray:
    return ami.detector_bias(spec, SUB128)


def detector_flat(spec: WfssSpec) -> np.ndarray:
    return ami.detector_flat(spec, SUB128)


def _gaussian(centre: float, n: int) -> np.ndarray:
    """A unit-sum Gaussian profile sampled over n pixels (pixel-integrated, roughly)."""
    x = np.arange(n)
    g = np.exp(-0.5 * ((x - centre) / STAR_SIGMA) ** 2)
    return g / g.sum()


def direct_rate(spec: WfssSpec) -> np.ndarray:
    rate = np.full((SUB128.ysize, SUB128.xsize), spec.sky_rate)
    for x, y, flux in spec.stars:
        rate += flux * np.outer(_gaussian(y, SUB128.ysize), _gaussian(x, SUB128.xsize))
    rate[reference_pixel_mask()] = 0.0
    return rate


def grism_rate(spec: WfssSpec) -> np.ndarray:
    """Each star's flux spread along its trace, flat in wavelength within the band
    (the same total count rate per unit wavelength the direct image has in total)."""
    rate = np.full((SUB128.ysize, SUB128.xsize), spec.sky_rate)
    fine = np.linspace(0.0, 1.0, 4001)
    weights = band_throughput(wavelength_of(fine))
    weights = weights / weights.sum()
    columns = np.arange(SUB128.xsize)
    for x, y, flux in spec.stars:
        dx, _ = trace_offset(fine)
        xs = x + dx
        # Distribute along x: pixel-integrated sampling of the trace.
        along = np.histogram(xs, bins=np.append(columns, SUB128.xsize) - 0.5, weights=weights)[0]
        rate += flux * np.outer(_gaussian(y, SUB128.ysize), along)
    rate[reference_pixel_mask()] = 0.0
    return rate


def exposure_timing(spec: WfssSpec, exposure: int):
    return ami.exposure_timing(spec, exposure, SUB128)


# --- headers ------------------------------------------------------------------------


def pixel_to_v2v3(x, y):
    """SUB128 pixel (1-based) to V2, V3 (arcsec): the linear DISTORTION reference."""
    return FRAME.pixel_to_v2v3(x, y)


def _populate(model, spec: WfssSpec, exposure: int) -> None:
    ami.set_nis_metadata(model.meta, spec, exposure, target=spec, sub=SUB128, frame=FRAME,
                         aperture=APERTURE, title="calstream synthetic NIRISS WFSS",
                         template=TEMPLATE, exp_type=spec.exp_type(exposure))
    i = model.meta.instrument
    i.filter, i.pupil = spec.optics(exposure)
    i.filter_position = FWCPOS


def simulate_wfss(out_dir: str | Path, spec: WfssSpec = WfssSpec(), *,
                  seed: int | None = None) -> list[Path]:
    """Write the visit's uncal files (direct image, then grism) into `out_dir`."""
    return ami.write_nis_visit(
        out_dir, spec, seed, sub=SUB128, stream=7, populate=_populate,
        rate=lambda exposure: grism_rate(spec) if spec.is_grism(exposure) else direct_rate(spec))
