"""FGS guide-star data (FGS_ACQ1), for calwebb_guider, as jwst names and heads it.

The acquisition ACQ1 that starts a visit: 128 x 128 pixel readouts of
GUIDER1 around the guide star, 2 groups per integration and 6 integrations
(jwst docs, data_products/guidestar_products.rst). The file is named by the
guiding activity and the time its data end,
``jw<ppppp><ooo><vvv>_gs-acq1_<yyyydddhhmmss>_uncal.fits``, and its primary
header has what guide-star headers have: program, observation and visit,
but no visit group, sequence, activity, exposure number or ENGQLPTG
(`steps.exposure.NOT_IN_GUIDER_HEADERS`).

jwst runs calwebb_guider (dq_init, guider_cds, flat_field) on it *instead of*
detector1, which asks CRDS for MASK (dq_init), GAIN and READNOISE
(guider_cds: the ERR array) and FLAT (flat_field; FFLAT, SFLAT and DFLAT are
NIRSpec's, 'N/A' here). `write_guider_reference_files` writes those four,
stamped with GUIDER1 and the 128X128 subarray.
"""

from __future__ import annotations

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
# ACQ1's window, in the science frame; FGS has no reference pixels inside it.
ACQ1 = Subarray("128X128", 961, 961, 128, 128, fastaxis=-2, slowaxis=1, noutputs=1)
REFERENCE_TYPES = ("mask", "gain", "readnoise", "flat")


@dataclass(frozen=True)
class GuiderSpec(PatternReadout):
    """The ACQ1 that ends `lead_seconds` before the visit (`visit_start`) starts."""

    READOUT_PATTERNS = {"ACQ1": (1, 0)}

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

    @property
    def end_mjd(self) -> float:
        from astropy.time import Time

        return Time(self.visit_start, format="isot", scale="utc").mjd - self.lead_seconds / 86400

    @property
    def group_time(self) -> float:
        return ACQ1.frame_time

    def start_mjd(self) -> float:
        return self.end_mjd - self.nints * self.ngroups * self.group_time / 86400

    def name(self) -> ExposureName:
        from astropy.time import Time

        year, day, hh, mm, ss = Time(self.end_mjd, format="mjd", scale="utc").yday.split(":")
        stamp = f"{year}{day}{hh}{mm}{int(float(ss)):02d}"
        return ExposureName(self.program, self.observation, self.visit, "", "", "", "", "",
                            suffix="uncal", guider=f"gs-acq1_{stamp}")

    def pool_rows(self, targets: dict[str, int]) -> list[dict[str, str]]:
        return []  # guide-star files are not exposures of the plan: no pool row

    def validate(self) -> None:
        self.check_readpatt("FGS", 2, "guider_cds differences 2 groups")


def detector_bias(spec: GuiderSpec) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 1)
    return (spec.bias_level + noise.normal(0.0, 25.0, (ACQ1.ysize, ACQ1.xsize))).astype(np.float32)


def detector_flat(spec: GuiderSpec) -> np.ndarray:
    noise = rng(name_key(DETECTOR), 2)
    return (1.0 + noise.normal(0.0, 0.01, (ACQ1.ysize, ACQ1.xsize))).astype(np.float32)


def _rate_image(spec: GuiderSpec) -> np.ndarray:
    y, x = np.mgrid[0:ACQ1.ysize, 0:ACQ1.xsize]
    cx = (ACQ1.xsize - 1) / 2 + spec.star_offset[0]
    cy = (ACQ1.ysize - 1) / 2 + spec.star_offset[1]
    star = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * spec.star_sigma**2))
    return spec.sky_rate + spec.star_flux * star / star.sum()


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
        "FGS_ACQ1", spec.readpatt, spec.nints, spec.ngroups, 1, 0)
    e.frame_time = e.group_time = spec.group_time
    e.integration_time = spec.ngroups * spec.group_time
    e.start_time, e.end_time, e.mid_time = start, end, (start + end) / 2
    s = m.subarray
    s.name, s.xstart, s.ystart, s.xsize, s.ysize, s.fastaxis, s.slowaxis = (
        ACQ1.name, ACQ1.xstart, ACQ1.ystart, ACQ1.xsize, ACQ1.ysize, ACQ1.fastaxis,
        ACQ1.slowaxis)


def simulate_guider(out_dir: str | Path, spec: GuiderSpec = GuiderSpec(), *,
                    seed: int | None = None) -> list[Path]:
    """Write the ACQ1 file into `out_dir` (float32, as GuiderRawModel holds it)."""
    from calstream.steps.synthetic.uncal_files import UncalWriter

    spec.validate()
    seed = spec.seed if seed is None else seed
    ramps = read_ramps(spec, [_rate_image(spec)] * spec.nints, flat=detector_flat(spec),
                       refpix=np.zeros((ACQ1.ysize, ACQ1.xsize), dtype=bool),
                       bias=detector_bias(spec), frame_time=spec.group_time,
                       noise=rng(seed, 9, name_key(DETECTOR)), drift=False)
    writer = UncalWriter(out_dir, spec.end_mjd, model="GuiderRawModel")
    return [writer.write(ramps.astype(np.float32), lambda model: _populate(model, spec))]


def _detector(spec: GuiderSpec) -> DetectorReferences:
    return DetectorReferences("FGS", DETECTOR, ACQ1, np.zeros((ACQ1.ysize, ACQ1.xsize), bool),
                              label="FGS ", mask_description="Synthetic FGS mask: no bad pixel")


def write_guider_reference_files(ref_dir: str | Path,
                                 spec: GuiderSpec = GuiderSpec()) -> dict[str, list[Path]]:
    """MASK, GAIN, READNOISE and FLAT of the ACQ1 window; {reftype: [paths]}."""
    detector = _detector(spec)
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = {t: detector.build(t, spec) for t in ("mask", "gain", "readnoise")}
    models["flat"] = detector.flat(detector_flat(spec), "Synthetic FGS flat: the pixel response",
                                   flag_reference_pixels=False, meta={})
    return {t: [save_reference(models[t], out / f"fgs_{DETECTOR.lower()}_acq1_{t}.fits")]
            for t in REFERENCE_TYPES}
