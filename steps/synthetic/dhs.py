"""A NIRCam Dispersed Hartmann Sensor time series (build 12.3), as level-1b uncal files.

DHS is a short-wave grism time series: EXP_TYPE NRC_TSGRISM with a DHS
pupil (GDHS0) read in a DHS stripe subarray. A stripe subarray is not a
rectangle of the detector: the readout takes `reads1` reference rows, skips
`skips1` rows, reads a `reads2`-row stripe, and so on (the MULTISTRIPE
keywords); jwst 3.0 (`jwst.lib.stripe_utils`) rebuilds where each row came
from. SUB41STRIPE1_DHS, the smallest, is one reference row and one 40-row
stripe, full width (2048 columns): 41 rows in the file.

The visit (observation 012): one exposure on NRCA1 through F150W2, a bright
target whose first-order DHS spectrum runs along the stripe where the
dispersion reference (`dhs_references`) puts it: full-frame column
x = TRACE_X[0] + (TRACE_X[1] - TRACE_X[0]) * t, wavelength
WAVE_RANGE[0] + (WAVE_RANGE[1] - WAVE_RANGE[0]) * t, t running 0..1, centred
on stripe row TRACE_ROW. jwst runs detector1 (rateints) and spec2 (calints,
x1dints, one slit per stripe); it keeps DHS out of tso3 (docs/routing.md).

The detector's bias and reference pixels are the full frame's (the NIRCam
imaging modes' `nircam_detectors` maps), cut the way the stripe readout
reads them: the detector1 references are that same cut (`dhs_references`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.attitude import solve_attitude
from calstream.steps.synthetic.detector_noise import name_key, read_ramps, rng
from calstream.steps.synthetic.focal_plane import LinearAperture, Subarray
from calstream.steps.synthetic.imaging_spec import integration_times
from calstream.steps.synthetic.level1b_wcs import set_fixed_pointing
from calstream.steps.synthetic.nircam_detectors import (
    FULL_SIZE,
    PIXEL_SCALE,
    READOUT_PATTERNS,
    REFPIX_BORDER,
    _full_frame_bias,
)
from calstream.steps.synthetic.timing import ramp_timing
from calstream.steps.synthetic.uncal_files import UncalWriter
from calstream.steps.synthetic.visit import (
    POINTING_CALCULATED,
    DetectorLevels,
    FixedSetup,
    VisitId,
)

DETECTOR, SCA_NUM = "NRCA1", 481
FILTER, PUPIL = "F150W2", "GDHS0"
SUB41 = Subarray("SUB41STRIPE1_DHS", 1, 1, FULL_SIZE, 41, fastaxis=-1, slowaxis=2, noutputs=4)
# How the stripe readout reads SUB41STRIPE1_DHS (SUBSTRIPE keywords of jwst's
# DHS test data): one reference row, skip 1526, one 40-row stripe.
MULTISTRIPE = {"multistripe_reads1": 1, "multistripe_skips1": 1526, "multistripe_reads2": 40,
               "multistripe_skips2": 85, "repeat_stripe": 1, "interleave_reads1": 1,
               "num_superstripe": 0}
STRIPE_ID = 10  # the stripe's label in the REGIONS and SPECWCS references
FIELDPOINT = "F444W"  # the DHS field point: named after the long-wave filter of the pair
APERTURE = "NRCA1_SUB41STRIPE1_DHS"
PPS_APERTURE = f"NRCA5_GRISM_{FIELDPOINT}"  # jwst selects the field point by this name
XREF, YREF = 1024.5, 21.5  # aperture reference pixel (1-based, file rows): mid-stripe
V2_REF, V3_REF, V3_IDL_YANGLE, VIDL_PARITY = 120.576793, -527.501431, -0.57873665, -1
FRAME = LinearAperture(PIXEL_SCALE, XREF, YREF, V2_REF, V3_REF, V3_IDL_YANGLE, VIDL_PARITY)
WAVE_RANGE = (1.0, 2.4)  # micron at t = 0 and t = 1
TRACE_X = (300.0, 1700.0)  # full-frame column at t = 0 and t = 1
TRACE_ROW = 19.0  # 0-based row of the stripe the trace is centred on
TRACE_SIGMA = 1.5  # cross-dispersion Gaussian sigma, pixels
TEMPLATE = "NIRCam Grism Time Series"


def stripe_rows() -> np.ndarray:
    """The full-frame row (0-based, science frame = detector frame: SLOWAXIS=2)
    each of the file's rows was read from."""
    m = MULTISTRIPE
    first = m["multistripe_reads1"] + m["multistripe_skips1"]
    return np.concatenate([np.arange(m["multistripe_reads1"]),
                           np.arange(first, first + m["multistripe_reads2"])])


def stripe_first_row() -> int:
    """Full-frame row (0-based) of the stripe's first row."""
    return int(stripe_rows()[MULTISTRIPE["multistripe_reads1"]])


@dataclass(frozen=True)
class DhsSpec(FixedSetup, DetectorLevels, VisitId):
    """One DHS time-series exposure: a bright target, a few integrations."""

    READOUT_PATTERNS = READOUT_PATTERNS
    DETECTOR, SUBARRAY, FILTER, PUPIL = DETECTOR, SUB41, FILTER, PUPIL

    # Observation 012 of the program, its own visit (after the dark's and WFSS's).
    observation: str = "012"
    visit_group: str = "01"
    visit_start: str = "2024-01-15T17:00:00.000"
    slew_seconds: float = 300.0
    # The target sits at the aperture reference point, as in every grism time series.
    target_ra: float = 53.1000
    target_dec: float = -27.7500
    target_name: str = "SYNTH-DHS-1"
    pa_v3: float = 120.0
    # The fewest groups jump takes and integrations jwst calls a time series.
    readpatt: str = "RAPID"
    ngroups: int = 3
    nints: int = 2
    # DN/s of the trace (summed across it, per column) and of the sky; the noise's seed.
    flux: float = 400.0
    sky_rate: float = 0.5
    seed: int = 2024

    @property
    def exposure_numbers(self) -> list[int]:
        return [1]

    def exposure_names(self):
        return [self.exposure_name(1, DETECTOR)]

    def segment_names(self, exposure: int, detector: str = DETECTOR):
        return [self.exposure_name(exposure, detector)]

    def validate(self) -> None:
        self.check_readpatt("NIRCam", 3, "DHS needs ngroups >= 3 (jump)")
        if self.nints < 2:
            raise ValueError("a time series needs nints >= 2 (jwst treats one as not TSO)")

    def start_mjd(self) -> float:
        return exposure_timing(self, 1).start_mjd

    def pool_rows(self, targets: dict[str, int]) -> list[dict[str, str]]:
        """The visit's pool row (`asn_pool`); `targets`: name -> TARGETID, updated."""
        from calstream.steps.synthetic.asn_pool import _common

        target_id = targets.setdefault(self.target_name, len(targets) + 1)
        row = _common(self, self.exposure_name(1, DETECTOR), 1, target_id)
        row.update({
            "EXP_TYPE": "NRC_TSGRISM", "NEXPOSUR": "1", "INSTRUME": "NIRCAM",
            "DETECTOR": DETECTOR, "CHANNEL": "SHORT", "MODULE": "A", "TEMPLATE": TEMPLATE,
            "FILTER": FILTER, "PUPIL": PUPIL, "PATTTYPE": "NONE", "NUMDTHPT": "1",
            "APERNAME": APERTURE, "SUBARRAY": SUB41.name, "TSOVISIT": "T",
            "EXSEGTOT": "1", "EXSEGNUM": "1", "NINTS": str(self.nints),
            "NGROUPS": str(self.ngroups),
        })
        return [row]


def reference_pixel_mask() -> np.ndarray:
    """True where the file holds reference pixels: the reference row, and the
    4 columns at each edge of the (full-width) stripe."""
    rows = stripe_rows()
    edge_rows = (rows < REFPIX_BORDER) | (rows >= FULL_SIZE - REFPIX_BORDER)
    cols = np.arange(FULL_SIZE)
    edge_cols = (cols < REFPIX_BORDER) | (cols >= FULL_SIZE - REFPIX_BORDER)
    return edge_rows[:, None] | edge_cols[None, :]


def detector_bias(spec: DhsSpec) -> np.ndarray:
    """NRCA1's full-frame bias map, at the rows the stripe readout reads."""
    return _full_frame_bias(DETECTOR, float(spec.bias_level))[stripe_rows()].copy()


def rate_image(spec: DhsSpec) -> np.ndarray:
    """DN/s of every pixel of the file: sky, and the first-order trace in the stripe."""
    ny, nx = SUB41.ysize, SUB41.xsize
    rate = np.full((ny, nx), spec.sky_rate)
    reads1 = MULTISTRIPE["multistripe_reads1"]
    rows = np.arange(ny) - reads1 - TRACE_ROW
    profile = np.exp(-0.5 * (rows / TRACE_SIGMA) ** 2)
    profile[:reads1] = 0.0
    profile /= profile.sum()
    cols = np.arange(nx)
    on_trace = (cols >= TRACE_X[0]) & (cols <= TRACE_X[1])
    rate += spec.flux * profile[:, None] * on_trace[None, :]
    rate[reference_pixel_mask()] = 0.0
    return rate


def exposure_timing(spec: DhsSpec, exposure: int):
    tframe = SUB41.frame_time
    per_group = spec.nframes + spec.groupgap
    duration = (spec.nints * (spec.ngroups * per_group - spec.groupgap) + spec.nints) * tframe
    return ramp_timing(spec, exposure, tframe, duration)


def pixel_to_v2v3(x, y):
    """File pixel (1-based) to V2, V3 (arcsec): the linear DISTORTION reference."""
    return FRAME.pixel_to_v2v3(x, y)


def _populate(model, spec: DhsSpec) -> None:
    m = model.meta
    t = exposure_timing(spec, 1)
    att = solve_attitude(spec, V2_REF, V3_REF)
    metadata.set_file(m, spec.exposure_name(1, DETECTOR).filename(), "calstream synthetic NIRCam DHS")
    metadata.set_observation(m, spec, 1, t, TEMPLATE)
    metadata.set_visit(m, quality=POINTING_CALCULATED, start_mjd=t.start_mjd, total_exposures=1,
                       tsovisit=True)
    metadata.set_target(m, spec, "POINT")
    i = m.instrument
    i.name, i.detector, i.channel, i.module = "NIRCAM", DETECTOR, "SHORT", "A"
    i.filter, i.pupil = FILTER, PUPIL
    metadata.set_exposure(m, spec, 1, t, exp_type="NRC_TSGRISM", noutputs=SUB41.noutputs,
                          sca_num=SCA_NUM)
    metadata.set_subarray(m.subarray, SUB41)
    for name, value in MULTISTRIPE.items():
        setattr(m.subarray, name, value)
    set_fixed_pointing(m, att, FRAME, SUB41, aperture=APERTURE, pps_aperture=PPS_APERTURE)
    model.int_times = integration_times(spec, 1, t)


def simulate_dhs(out_dir: str | Path, spec: DhsSpec = DhsSpec(), *,
                 seed: int | None = None) -> list[Path]:
    """Write the visit's uncal file into `out_dir`."""
    spec.validate()
    seed = spec.seed if seed is None else seed
    writer = UncalWriter(out_dir, exposure_timing(spec, 1).end_mjd)
    ramps = read_ramps(spec, [rate_image(spec)] * spec.nints,
                       flat=np.ones((SUB41.ysize, SUB41.xsize)), refpix=reference_pixel_mask(),
                       bias=detector_bias(spec), frame_time=SUB41.frame_time,
                       noise=rng(seed, 12, 1, name_key(DETECTOR)))
    return [writer.write(ramps, lambda model: _populate(model, spec))]
