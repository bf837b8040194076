"""The NIRCam imaging visit (`ProgramSpec`): what it observes, how its
detectors read, and when its exposures and their integrations happen."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic.nircam_detectors import READOUT_PATTERNS, subarray_for
from calstream.steps.synthetic.timing import ExposureTiming, ramp_timing
from calstream.steps.synthetic.visit import (
    POINTING_CALCULATED,
    POINTING_PLANNED,
    PatternReadout,
    VisitId,
)

# What each supported exposure type is, as APT and the headers say it.
TEMPLATES = {"NRC_IMAGE": "NIRCam Imaging", "NRC_TSIMAGE": "NIRCam Time Series Imaging",
             "NRC_DARK": "NIRCam Dark"}


@dataclass(frozen=True)
class ProgramSpec(PatternReadout, VisitId):
    """One NIRCam imaging visit: what to observe and how the detectors behave."""

    detectors: tuple[str, ...] = ("nrcb1",)
    filter: str = "F150W"
    pupil: str = "CLEAR"
    subarray: str = "SUB160"
    readpatt: str = "RAPID"
    ngroups: int = 5
    nints: int = 1
    dithers: int = 4
    target_ra: float = 53.1625  # deg
    target_dec: float = -27.7914
    target_name: str = "SYNTH-FIELD-1"
    pa_v3: float = 293.5  # deg, position angle of V3 at V1 for the whole visit
    # Exposure numbers whose pointing came from the plan, not guide-star telemetry.
    planned: tuple[int, ...] = ()
    # How far off a PLANNED pointing is (ideal frame, arcsec): its WCS is wrong by this.
    planned_pointing_error: tuple[float, float] = (0.9, -0.6)
    visit_start: str = "2024-01-15T08:00:00.000"  # UTC
    slew_seconds: float = 40.0  # dither move + settle between exposures
    seed: int = 2024
    # Scene and detector, shared with the synthetic reference files.
    sky_rate: float = 4.0  # DN/s per pixel
    n_stars: int = 12
    star_sigma: float = 1.0  # pixels
    star_flux_range: tuple[float, float] = (3000.0, 30000.0)  # DN/s, total per star
    dark_rate: float = 0.02  # DN/s
    bias_level: float = 12000.0  # DN
    gain: float = 2.0  # e-/DN
    readnoise: float = 7.0  # DN, noise of a difference of two reads (CDS)
    saturation: float = 58000.0  # DN, raw (bias included)
    exp_type: str = "NRC_IMAGE"
    tsovisit: bool = False
    # A star at the target coordinates (DN/s, total), on top of the field
    # stars; 0: none. Time series put their target there.
    target_flux: float = 0.0
    # Files per exposure: stage 1 splits a long exposure at integration
    # boundaries into segments (EXSEGTOT), written as -segNNN files.
    segments: int = 1
    # Ideal-frame offset (arcsec) of the whole visit from the field's centre:
    # another visit (a mosaic tile, a second epoch) of the same field.
    pointing_offset: tuple[float, float] = (0.0, 0.0)
    # The seed of the stars on the sky (None: the noise seed). Visits of one
    # field share it, so tweakreg finds the same stars in all of them.
    scene_seed: int | None = None
    # Planned exposures (counted in NEXPOSUR) that are never written, as when
    # an exposure is lost; and exposures a downlink delivers after the rest.
    missing: tuple[int, ...] = ()
    late: tuple[int, ...] = ()

    READOUT_PATTERNS = READOUT_PATTERNS

    @property
    def exposure_numbers(self) -> list[int]:
        return list(range(1, self.dithers + 1))

    def exposure_names(self) -> list[ExposureName]:
        """Every exposure of the visit, in observing order (exposure, then detector)."""
        return [self.exposure_name(e, d) for e in self.exposure_numbers for d in self.detectors]

    def segment_names(self, exposure: int, detector: str) -> list[ExposureName]:
        """The files of one exposure on one detector: itself, or its segments."""
        name = self.exposure_name(exposure, detector)
        if self.segments == 1:
            return [name]
        return [dataclasses.replace(name, segment=f"{s:03d}") for s in range(1, self.segments + 1)]

    def segment_integrations(self) -> list[tuple[int, int]]:
        """(INTSTART, INTEND), 1-based and inclusive, of each segment.

        Equal segments but the last, as stage 1 cuts them at a fixed size.
        """
        size = -(-self.nints // self.segments)
        return [(first, min(first + size - 1, self.nints))
                for first in range(1, self.nints + 1, size)]

    def pointing_quality(self, exposure: int) -> str:
        return POINTING_PLANNED if exposure in self.planned else POINTING_CALCULATED

    def target_flux_factor(self, integration: int) -> float:
        """Brightness of the target star in an integration (1-based), relative to `target_flux`."""
        return 1.0

    @property
    def dither_pattern(self) -> str:
        """PATTTYPE."""
        return "SUBARRAY-DITHER" if self.subarray.upper() != "FULL" else "INTRAMODULEBOX"

    def validate(self) -> None:
        if self.exp_type not in TEMPLATES:
            raise ValueError(f"unsupported exposure type {self.exp_type!r}; one of {sorted(TEMPLATES)}")
        self.check_readpatt("NIRCam")
        for d in self.detectors:
            subarray_for(d, self.subarray)
        if self.ngroups < 2 or self.nints < 1 or self.dithers < 1:
            raise ValueError("need ngroups >= 2, nints >= 1, dithers >= 1")
        for what in ("planned", "missing", "late"):
            bad = set(getattr(self, what)) - set(self.exposure_numbers)
            if bad:
                raise ValueError(f"{what} exposures {sorted(bad)} are not in the visit")
        if set(self.missing) & set(self.late):
            raise ValueError("an exposure cannot be both missing and late")
        if not 1 <= self.segments <= self.nints:
            raise ValueError("need 1 <= segments <= nints")
        if len(self.segment_integrations()) != self.segments:
            raise ValueError(f"{self.nints} integrations do not cut into {self.segments} segments")


def exposure_timing(spec: ProgramSpec, exposure: int) -> ExposureTiming:
    tframe = subarray_for(spec.detectors[0], spec.subarray).frame_time
    per_group = spec.nframes + spec.groupgap
    resets = 1 + (spec.nints - 1)  # one reset before each integration
    duration = (spec.nints * (spec.ngroups * per_group - spec.groupgap) + resets) * tframe
    return ramp_timing(spec, exposure, tframe, duration)


def integration_times(spec: ProgramSpec, exposure: int,
                      timing: ExposureTiming | None = None) -> np.ndarray:
    """The INT_TIMES table: start, mid, end of each integration, in MJD UTC and BJD TDB.
    `timing`: the exposure's, for a spec whose subarray imaging does not know.

    BJD from the geocentre (astropy's built-in ephemeris, no download): JWST
    is about 5 light-seconds from Earth, which a synthetic table can ignore.
    """
    from astropy import units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    t = timing or exposure_timing(spec, exposure)
    tint = (spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap) * t.frame_time
    # Each integration starts after one reset frame.
    starts = t.start_mjd + (np.arange(spec.nints) * (tint + t.frame_time) + t.frame_time) / 86400
    ends = starts + tint / 86400
    mids = (starts + ends) / 2
    target = SkyCoord(spec.target_ra * u.deg, spec.target_dec * u.deg)
    geocentre = EarthLocation.from_geocentric(0.0, 0.0, 0.0, unit=u.m)

    def bjd(mjd):
        utc = Time(mjd, format="mjd", scale="utc", location=geocentre)
        return (utc.tdb + utc.light_travel_time(target, ephemeris="builtin")).mjd

    rows = [
        (i + 1, s, m, e, bs, bm, be)
        for i, (s, m, e, bs, bm, be) in enumerate(
            zip(starts, mids, ends, bjd(starts), bjd(mids), bjd(ends), strict=True)
        )
    ]
    return np.array(
        rows,
        dtype=[
            ("integration_number", "<i4"),
            ("int_start_MJD_UTC", "<f8"),
            ("int_mid_MJD_UTC", "<f8"),
            ("int_end_MJD_UTC", "<f8"),
            ("int_start_BJD_TDB", "<f8"),
            ("int_mid_BJD_TDB", "<f8"),
            ("int_end_BJD_TDB", "<f8"),
        ],
    )
