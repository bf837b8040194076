"""FGS guide-star data, for calwebb_guider, as jwst names and heads it.

The guiding activities of a visit's start, each one file (jwst docs,
data_products/guidestar_products.rst), read from GUIDER1:

* FGS_ACQ1: 128 x 128 pixels around the guide star, 2 groups a readout, 6;
* FGS_ACQ2: 32 x 32, 2 groups, 5 readouts;
* FGS_TRACK: 32 x 32, 2 groups, 12 readouts;
* FGS_FINEGUIDE: 8 x 8, 8 groups (guider_cds averages the first and last
  4), 12 readouts.

(FGS_ID-IMAGE is not simulated: its readouts are the full 2048 x 2048
detector, too large for a test kit.) Each file is named by its activity
and the time its data end, ``jw<ppppp><ooo><vvv>_gs-<acq1|acq2|track|fg>_
<yyyydddhhmmss>_uncal.fits``, and its primary header has what guide-star
headers have: program, observation and visit, but no visit group,
sequence, activity, exposure number or ENGQLPTG
(`steps.exposure_keywords.NOT_IN_GUIDER_HEADERS`).

jwst runs calwebb_guider (dq_init, guider_cds, flat_field) on it *instead of*
detector1, which asks CRDS for MASK (dq_init), GAIN and READNOISE
(guider_cds: the ERR array) and FLAT (flat_field; FFLAT, SFLAT and DFLAT are
NIRSpec's, 'N/A' here). `write_guider_reference_files` writes those four
for each window (stamped with GUIDER1 and the window's subarray: CRDS
selects by both).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic.detector_noise import name_key, read_ramps, rng
from calstream.steps.synthetic.detector_references import DetectorReferences
from calstream.steps.synthetic.focal_plane import Subarray
from calstream.steps.synthetic.metadata import isot
from calstream.steps.synthetic.reference_models import save_reference
from calstream.steps.synthetic.visit import PatternReadout

DETECTOR = "GUIDER1"
# The activities' windows, in the science frame, centred on the same star;
# FGS has no reference pixels inside them.
ACQ1 = Subarray("128X128", 961, 961, 128, 128, fastaxis=-2, slowaxis=1, noutputs=1)
TRACK = Subarray("32X32", 1009, 1009, 32, 32, fastaxis=-2, slowaxis=1, noutputs=1)
FINEGUIDE = Subarray("8X8", 1021, 1021, 8, 8, fastaxis=-2, slowaxis=1, noutputs=1)
REFERENCE_TYPES = ("mask", "gain", "readnoise", "flat")


@dataclass(frozen=True)
class Activity:
    """One guiding activity: its file-name part, window and readout."""

    name: str  # gs-<name>_<time>
    subarray: Subarray
    readpatt: str
    ngroups: int
    nints: int
    ends_before_visit: float  # seconds


ACTIVITIES = {
    "FGS_ACQ1": Activity("acq1", ACQ1, "ACQ1", 2, 6, 30.0),
    "FGS_ACQ2": Activity("acq2", TRACK, "ACQ2", 2, 5, 20.0),
    "FGS_TRACK": Activity("track", TRACK, "TRACK", 2, 12, 10.0),
    "FGS_FINEGUIDE": Activity("fg", FINEGUIDE, "FINEGUIDE", 8, 12, 2.0),
}


@dataclass(frozen=True)
class GuiderSpec(PatternReadout):
    """The ACQ1 (or `exp_type`'s activity) that ends `lead_seconds` before the
    visit (`visit_start`) starts; `activity` makes one with its own readout."""

    READOUT_PATTERNS = {a.readpatt: (1, 0) for a in ACTIVITIES.values()}

    program: str = "01234"
    observation: str = "001"
    visit: str = "001"
    visit_start: str = "2024-01-15T08:00:00.000"
    lead_seconds: float = 30.0
    readpatt: str = "ACQ1"
    ngroups: int = 2
    nints: int = 6
    star_flux: float = 4.0e5  # DN/s, total
    star_sigma: float = 1.2  # pixels
    star_offset: tuple[float, float] = (3.4, -2.1)  # pixels from the window's centre
    sky_rate: float = 5.0
    dark_rate: float = 0.05
    bias_level: float = 11000.0
    gain: float = 2.2
    readnoise: float = 12.0
    saturation: float = 60000.0
    seed: int = 2024
    exp_type: str = "FGS_ACQ1"  # this file's activity (see `activity`)
    # The activities the visit's guiding takes, each a file (simulate_guider).
    activities: tuple[str, ...] = tuple(ACTIVITIES)

    def activity(self, exp_type: str) -> GuiderSpec:
        """This visit's `exp_type` activity, read and timed as ACTIVITIES says."""
        a = ACTIVITIES[exp_type]
        return dataclasses.replace(self, exp_type=exp_type, readpatt=a.readpatt,
                                   ngroups=a.ngroups, nints=a.nints,
                                   lead_seconds=a.ends_before_visit)

    @property
    def window(self) -> Subarray:
        return ACTIVITIES[self.exp_type].subarray

    @property
    def end_mjd(self) -> float:
        from astropy.time import Time

        return Time(self.visit_start, format="isot", scale="utc").mjd - self.lead_seconds / 86400

    @property
    def group_time(self) -> float:
        return self.window.frame_time

    def start_mjd(self) -> float:
        return self.end_mjd - self.nints * self.ngroups * self.group_time / 86400

    def name(self) -> ExposureName:
        from astropy.time import Time

        year, day, hh, mm, ss = Time(self.end_mjd, format="mjd", scale="utc").yday.split(":")
        stamp = f"{year}{day}{hh}{mm}{int(float(ss)):02d}"
        return ExposureName(self.program, self.observation, self.visit, "", "", "", "", "",
                            suffix="uncal",
                            guider=f"gs-{ACTIVITIES[self.exp_type].name}_{stamp}")

    def pool_rows(self, targets: dict[str, int]) -> list[dict[str, str]]:
        return []  # guide-star files are not exposures of the plan: no pool row

    def validate(self) -> None:
        minimum = 8 if self.exp_type == "FGS_FINEGUIDE" else 2
        self.check_readpatt("FGS", minimum, f"guider_cds differences {minimum} groups")


def _cutout(full: np.ndarray, window: Subarray) -> np.ndarray:
    """``window`` of an ACQ1-window map: every activity sees the same pixels."""
    y0, x0 = window.ystart - ACQ1.ystart, window.xstart - ACQ1.xstart
    return full[y0:y0 + window.ysize, x0:x0 + window.xsize]


def detector_bias(spec: GuiderSpec) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 1)
    full = spec.bias_level + noise.normal(0.0, 25.0, (ACQ1.ysize, ACQ1.xsize))
    return _cutout(full, spec.window).astype(np.float32)


def detector_flat(spec: GuiderSpec) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 2)
    return _cutout(1.0 + noise.normal(0.0, 0.01, (ACQ1.ysize, ACQ1.xsize)),
                   spec.window).astype(np.float32)


def _rate_image(spec: GuiderSpec) -> np.ndarray:
    y, x = np.mgrid[0:ACQ1.ysize, 0:ACQ1.xsize]
    cx = (ACQ1.xsize - 1) / 2 + spec.star_offset[0]
    cy = (ACQ1.ysize - 1) / 2 + spec.star_offset[1]
    star = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * spec.star_sigma**2))
    return _cutout(spec.sky_rate + spec.star_flux * star / star.sum(), spec.window)


def _populate(model, spec: GuiderSpec) -> None:
    m = model.meta
    start, end = spec.start_mjd(), spec.end_mjd
    date, time = isot(start).split("T")
    m.filename = spec.name().filename()
    m.origin, m.telescope = "STScI", "JWST"
    m.data_processing_software_version = "calstream-synthetic"
    o = m.observation
    o.date, o.time, o.date_beg, o.date_end = date, time, isot(start), isot(end)
    o.program_number, o.observation_number, o.visit_number = (
        spec.program, spec.observation, spec.visit)
    o.visit_id = f"{spec.program}{spec.observation}{spec.visit}"
    m.visit.total_exposures = 1
    m.instrument.name, m.instrument.detector = "FGS", DETECTOR
    e = m.exposure
    e.type, e.readpatt, e.nints, e.ngroups, e.nframes, e.groupgap = (
        spec.exp_type, spec.readpatt, spec.nints, spec.ngroups, 1, 0)
    e.frame_time = e.group_time = spec.group_time
    e.integration_time = spec.ngroups * spec.group_time
    e.start_time, e.end_time, e.mid_time = start, end, (start + end) / 2
    s, w = m.subarray, spec.window
    s.name, s.xstart, s.ystart, s.xsize, s.ysize, s.fastaxis, s.slowaxis = (
        w.name, w.xstart, w.ystart, w.xsize, w.ysize, w.fastaxis, w.slowaxis)


def simulate_guider(out_dir: str | Path, spec: GuiderSpec = GuiderSpec(), *,
                    seed: int | None = None) -> list[Path]:
    """Write a file per activity of `spec.activities` into `out_dir` (float32, as
    GuiderRawModel holds it), in the order they are taken."""
    seed = spec.seed if seed is None else seed
    return [_simulate_activity(out_dir, spec.activity(t), seed + n)
            for n, t in enumerate(spec.activities)]


def _simulate_activity(out_dir: str | Path, spec: GuiderSpec, seed: int) -> Path:
    from calstream.steps.synthetic.uncal_files import UncalWriter

    spec.validate()
    ramps = read_ramps(spec, [_rate_image(spec)] * spec.nints, flat=detector_flat(spec),
                       refpix=np.zeros((spec.window.ysize, spec.window.xsize), dtype=bool),
                       bias=detector_bias(spec), frame_time=spec.group_time,
                       noise=rng(seed, 9, name_key(DETECTOR)), drift=False)
    writer = UncalWriter(out_dir, spec.end_mjd, model="GuiderRawModel")
    return writer.write(ramps.astype(np.float32), lambda model: _populate(model, spec))


def _detector(spec: GuiderSpec) -> DetectorReferences:
    w = spec.window
    return DetectorReferences("FGS", DETECTOR, w, np.zeros((w.ysize, w.xsize), bool),
                              label="FGS ", mask_description="Synthetic FGS mask: no bad pixel")


def write_guider_reference_files(ref_dir: str | Path,
                                 spec: GuiderSpec = GuiderSpec()) -> dict[str, list[Path]]:
    """MASK, GAIN, READNOISE and FLAT of each window `spec.activities` read
    (ACQ2 and TRACK share theirs); {reftype: [paths]}."""
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    windows = {ACTIVITIES[t].subarray.name: spec.activity(t) for t in spec.activities}
    written: dict[str, list[Path]] = {t: [] for t in REFERENCE_TYPES}
    for name, window_spec in windows.items():
        detector = _detector(window_spec)
        models = {t: detector.build(t, window_spec) for t in ("mask", "gain", "readnoise")}
        models["flat"] = detector.flat(detector_flat(window_spec),
                                       "Synthetic FGS flat: the pixel response",
                                       flag_reference_pixels=False, meta={})
        for t in REFERENCE_TYPES:
            path = out / f"fgs_{DETECTOR.lower()}_{name.lower()}_{t}.fits"
            written[t].append(save_reference(models[t], path))
    return written
