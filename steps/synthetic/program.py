"""A small NIRCam short-wave imaging program, written as level-1b uncal exposures.

One visit, one exposure per dither position and detector, with every header
routing, associations and the jwst pipelines read. The scene is a flat sky
plus a dozen Gaussian stars fixed on the sky, so the stars move in pixels with
the dither and image3's tweakreg has something to align. PLANNED exposures
carry a header pointing that is off by `planned_pointing_error`, as a planned
attitude is; tweakreg finds and removes that offset.

The same machinery writes an imaging time series (`timeseries.TimeSeriesSpec`):
the spec sets the exposure type and TSOVISIT, may put a star at the target
coordinates whose brightness changes by integration (`target_flux_factor`),
and may use the point-source subarrays; multi-integration exposures carry
an INT_TIMES table, as real ones do.

Determinism: the data depend only on the spec and the seed; the header DATE
(normally "now") is pinned to an hour after the visit, so a re-run writes the
same bytes.

Geometry follows the SIAF (PRD) for the full-frame apertures; the science
frame pixel to ideal to V2/V3 mapping is the SIAF's linear one (no optical
distortion), which is exactly what `references.write_reference_files` puts in
the synthetic DISTORTION reference, so the WCS image2 builds matches the
pixels the stars were drawn on.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.metadata import isot

PIXEL_SCALE = 0.031  # arcsec/pixel, short-wave channel
FULL_SIZE = 2048
REFPIX_BORDER = 4  # a full frame has 4 reference pixels on each edge, with no signal
VIDL_PARITY = -1  # NIRCam ideal X runs along -V2

POINTING_CALCULATED = "CALCULATED_TRACK_TR_202111"
POINTING_PLANNED = "PLANNED"

# What each supported exposure type is, as APT and the headers say it.
TEMPLATES = {"NRC_IMAGE": "NIRCam Imaging", "NRC_TSIMAGE": "NIRCam Time Series Imaging"}


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


@dataclass(frozen=True)
class Subarray:
    name: str
    xstart: int  # 1-based, science frame
    ystart: int
    xsize: int
    ysize: int
    fastaxis: int
    slowaxis: int
    noutputs: int

    @property
    def xref(self) -> float:
        """SIAF reference pixel of the aperture (1-based, subarray frame)."""
        return (self.xsize + 1) / 2

    @property
    def yref(self) -> float:
        return (self.ysize + 1) / 2

    @property
    def frame_time(self) -> float:
        # Each row costs 12 extra pixel clocks, each frame one (full) or two (subarray)
        # extra rows, at 10 us per pixel.
        extra_rows = 1 if self.name == "FULL" else 2
        return round((self.xsize / self.noutputs + 12) * (self.ysize + extra_rows) * 1e-5, 5)


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


@dataclass(frozen=True)
class VisitId:
    """Where a visit sits in its program: what its exposures' names are made of."""

    program: str = "01234"
    observation: str = "001"
    visit: str = "001"
    visit_group: str = "02"
    sequence: str = "1"
    activity: str = "01"

    def exposure_name(self, exposure: int, detector: str) -> ExposureName:
        return ExposureName(
            program=self.program,
            observation=self.observation,
            visit=self.visit,
            visit_group=self.visit_group,
            sequence=self.sequence,
            activity=self.activity,
            exposure=f"{exposure:05d}",
            detector=detector.lower(),
            suffix="uncal",
        )


@dataclass(frozen=True)
class ProgramSpec(VisitId):
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

    @property
    def nframes(self) -> int:
        return READOUT_PATTERNS[self.readpatt][0]

    @property
    def groupgap(self) -> int:
        return READOUT_PATTERNS[self.readpatt][1]

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
        if self.readpatt not in READOUT_PATTERNS:
            raise ValueError(f"unknown NIRCam readout pattern {self.readpatt!r}")
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


# --- timing ---------------------------------------------------------------


@dataclass(frozen=True)
class ExposureTiming:
    frame_time: float
    group_time: float
    integration_time: float  # EFFINTTM
    exposure_time: float  # EFFEXPTM
    measurement_time: float  # TMEASURE: first to last group, summed over integrations
    duration: float  # resets included
    start_mjd: float
    mid_mjd: float
    end_mjd: float


def exposure_timing(spec: ProgramSpec, exposure: int) -> ExposureTiming:
    tframe = subarray_for(spec.detectors[0], spec.subarray).frame_time
    per_group = spec.nframes + spec.groupgap
    resets = 1 + (spec.nints - 1)  # one reset before each integration
    duration = (spec.nints * (spec.ngroups * per_group - spec.groupgap) + resets) * tframe
    return ramp_timing(spec, exposure, tframe, duration)


def ramp_timing(spec, exposure: int, tframe: float, duration: float) -> ExposureTiming:
    """Timing of one of a visit's exposures, each `duration` seconds long (resets included)
    and `spec.slew_seconds` apart; `spec` gives the readout (a NIRCam or MIRI spec)."""
    from astropy.time import Time

    per_group = spec.nframes + spec.groupgap
    tgroup = per_group * tframe
    tint = (spec.ngroups * per_group - spec.groupgap) * tframe
    visit_start = Time(spec.visit_start, format="isot", scale="utc").mjd
    start = visit_start + (exposure - 1) * (duration + spec.slew_seconds) / 86400.0
    end = start + duration / 86400.0
    return ExposureTiming(
        frame_time=tframe,
        group_time=round(tgroup, 5),
        integration_time=round(tint, 5),
        exposure_time=round(tint * spec.nints, 5),
        measurement_time=round((spec.ngroups - 1) * tgroup * spec.nints, 5),
        duration=round(duration, 5),
        start_mjd=start,
        mid_mjd=(start + end) / 2,
        end_mjd=end,
    )


# --- pointing -------------------------------------------------------------


def ideal_to_v2v3(xi, yi, v2v3_ref: tuple[float, float], v3_idl_yangle: float, vparity: int):
    """Ideal frame (arcsec from an aperture's reference point) to V2, V3 (arcsec), SIAF linear."""
    a = math.radians(v3_idl_yangle)
    v2 = v2v3_ref[0] + vparity * xi * math.cos(a) + yi * math.sin(a)
    v3 = v2v3_ref[1] - vparity * xi * math.sin(a) + yi * math.cos(a)
    return v2, v3


def v2v3_to_ideal(v2, v3, v2v3_ref: tuple[float, float], v3_idl_yangle: float, vparity: int):
    """Inverse of `ideal_to_v2v3`."""
    a = math.radians(v3_idl_yangle)
    dv2 = np.asarray(v2, dtype=float) - v2v3_ref[0]
    dv3 = np.asarray(v3, dtype=float) - v2v3_ref[1]
    xi = vparity * (dv2 * math.cos(a) - dv3 * math.sin(a))
    yi = dv2 * math.sin(a) + dv3 * math.cos(a)
    return xi, yi


def pixel_to_v2v3(detector: str, x_full, y_full):
    """Science-frame full-frame pixel (1-based) to V2, V3 (arcsec), SIAF linear model."""
    g = detector_geometry(detector)
    xi = PIXEL_SCALE * (np.asarray(x_full, dtype=float) - (FULL_SIZE + 1) / 2)
    yi = PIXEL_SCALE * (np.asarray(y_full, dtype=float) - (FULL_SIZE + 1) / 2)
    return ideal_to_v2v3(xi, yi, (g.v2_ref, g.v3_ref), g.v3_idl_yangle, VIDL_PARITY)


def v2v3_to_pixel(detector: str, v2, v3):
    """Inverse of `pixel_to_v2v3`."""
    g = detector_geometry(detector)
    xi, yi = v2v3_to_ideal(v2, v3, (g.v2_ref, g.v3_ref), g.v3_idl_yangle, VIDL_PARITY)
    c = (FULL_SIZE + 1) / 2
    return xi / PIXEL_SCALE + c, yi / PIXEL_SCALE + c


def attitude_matrix(v2: float, v3: float, roll: float, ra: float, dec: float) -> np.ndarray:
    """Rotation taking telescope (V2, V3 in arcsec) unit vectors to ICRS unit vectors.

    The JWST convention: (v2, v3) lands on (ra, dec) with V3 at position angle
    `roll` there. Built with astropy's rotation sequence, as assign_wcs does.
    """
    from astropy.modeling.rotations import RotationSequence3D

    rot = RotationSequence3D([v2 / 3600.0, -v3 / 3600.0, roll, dec, -ra], axes_order="zyxyz")
    basis = np.eye(3)
    x, y, z = rot(basis[0], basis[1], basis[2])
    return np.array([x, y, z])


def _unit(lon_deg, lat_deg):
    lon = np.radians(lon_deg)
    lat = np.radians(lat_deg)
    return np.array([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])


def _lonlat(vec):
    lon = np.degrees(np.arctan2(vec[1], vec[0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(vec[2], -1.0, 1.0)))
    return lon, lat


def tel_to_sky(att: np.ndarray, v2, v3):
    return _lonlat(att @ _unit(np.asarray(v2) / 3600.0, np.asarray(v3) / 3600.0))


def sky_to_tel(att: np.ndarray, ra, dec):
    lon, lat = _lonlat(att.T @ _unit(ra, dec))
    lon = np.where(lon > 180.0, lon - 360.0, lon)
    return lon * 3600.0, lat * 3600.0


def position_angle(ra1, dec1, ra2, dec2) -> float:
    """East of north, degrees, of point 2 seen from point 1."""
    r1, d1, r2, d2 = map(math.radians, (ra1, dec1, ra2, dec2))
    y = math.sin(r2 - r1) * math.cos(d2)
    x = math.cos(d1) * math.sin(d2) - math.sin(d1) * math.cos(d2) * math.cos(r2 - r1)
    return math.degrees(math.atan2(y, x)) % 360.0


def v3_position_angle(att: np.ndarray, v2: float, v3: float) -> float:
    """Position angle of the +V3 direction at (v2, v3)."""
    ra0, dec0 = tel_to_sky(att, v2, v3)
    ra1, dec1 = tel_to_sky(att, v2, v3 + 1.0)
    return position_angle(float(ra0), float(dec0), float(ra1), float(dec1))


def v1_pointing(att: np.ndarray) -> tuple[float, float, float]:
    """RA, Dec (deg) of V1 and the position angle of V3 there: the PA_V3 the header quotes."""
    ra_v1, dec_v1 = (float(v) for v in tel_to_sky(att, 0.0, 0.0))
    return ra_v1, dec_v1, v3_position_angle(att, 0.0, 0.0)


def dither_offset(position: int) -> tuple[float, float]:
    """Ideal-frame offset (arcsec) of the target at a dither position (1-based).

    A 4-point pattern with sub-pixel phases, small enough that a SUB160
    field keeps most stars in common; further positions repeat it, shifted.
    """
    base = [(0.0, 0.0), (15.5, 12.25), (-10.25, 19.5), (5.75, -14.0)]
    cycle, point = divmod(position - 1, len(base))
    dx, dy = base[point]
    return ((dx + 3.5 * cycle) * PIXEL_SCALE, (dy + 2.5 * cycle) * PIXEL_SCALE)


def _primary_aperture_ref(spec: ProgramSpec) -> tuple[str, float, float]:
    det = spec.detectors[0].upper()
    sub = subarray_for(det, spec.subarray)
    return det, sub.xstart - 1 + sub.xref, sub.ystart - 1 + sub.yref


def _attitude_for(spec: ProgramSpec, ideal_offset: tuple[float, float]) -> np.ndarray:
    """Attitude that puts the target at `ideal_offset` from the primary aperture's reference.

    PA_V3 stays fixed for the visit; solve the roll at the target so that V3 at
    V1 has that position angle.
    """
    det, xref, yref = _primary_aperture_ref(spec)
    v2t, v3t = pixel_to_v2v3(
        det, xref + ideal_offset[0] / PIXEL_SCALE, yref + ideal_offset[1] / PIXEL_SCALE
    )
    return solve_attitude(spec, float(v2t), float(v3t))


def solve_attitude(spec, v2: float, v3: float) -> np.ndarray:
    """Attitude putting the target at telescope (v2, v3) with V3 at V1 at `spec.pa_v3`."""
    roll = spec.pa_v3
    for _ in range(4):
        att = attitude_matrix(v2, v3, roll, spec.target_ra, spec.target_dec)
        err = (v3_position_angle(att, 0.0, 0.0) - spec.pa_v3 + 180.0) % 360.0 - 180.0
        roll -= err
    return attitude_matrix(v2, v3, roll, spec.target_ra, spec.target_dec)


@dataclass(frozen=True)
class Pointing:
    """Where an exposure looked (true) and what its header says (reported)."""

    exposure: int
    offset: tuple[float, float]  # ideal arcsec, dither offset of the target
    true_attitude: np.ndarray
    reported_attitude: np.ndarray
    quality: str


def exposure_pointing(spec: ProgramSpec, exposure: int) -> Pointing:
    dx, dy = dither_offset(exposure)
    offset = (dx + spec.pointing_offset[0], dy + spec.pointing_offset[1])
    true_att = _attitude_for(spec, offset)
    quality = spec.pointing_quality(exposure)
    if quality == POINTING_PLANNED:
        err = spec.planned_pointing_error
        reported = _attitude_for(spec, (offset[0] + err[0], offset[1] + err[1]))
    else:
        reported = true_att
    return Pointing(exposure, offset, true_att, reported, quality)


# --- the scene ------------------------------------------------------------


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


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _name_key(name: str) -> int:
    return zlib.crc32(name.upper().encode())


def program_truth(spec: ProgramSpec = ProgramSpec(), *, seed: int | None = None) -> ProgramTruth:
    """The injected scene and rates for `spec` (cheap: no pixels are simulated)."""
    seed = spec.seed if seed is None else seed
    rng = _rng(seed if spec.scene_seed is None else spec.scene_seed, 0)
    det, xref, yref = _primary_aperture_ref(spec)
    sub = subarray_for(det, spec.subarray)
    margin = 12
    x = rng.uniform(margin, sub.xsize - margin, spec.n_stars) + sub.xstart - 1
    y = rng.uniform(margin, sub.ysize - margin, spec.n_stars) + sub.ystart - 1
    lo, hi = spec.star_flux_range
    flux = np.exp(rng.uniform(math.log(lo), math.log(hi), spec.n_stars))
    # The field's own attitude, not a visit's: every visit of it sees the same stars.
    att = _attitude_for(spec, dither_offset(1))
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


@functools.lru_cache(maxsize=16)
def _full_frame_bias(detector: str, level: float) -> np.ndarray:
    # A fixed pattern per detector (not per seed): the SUPERBIAS reference is
    # this same map, as a real one is the mean of many bias frames.
    rng = _rng(_name_key(detector), 1)
    cols = rng.normal(0.0, 25.0, FULL_SIZE)
    pix = rng.normal(0.0, 40.0, (FULL_SIZE, FULL_SIZE))
    bias = (level + cols[None, :] + pix).astype(np.float32)
    bias.setflags(write=False)
    return bias


def detector_bias(spec: ProgramSpec, detector: str) -> np.ndarray:
    """The bias (DN) of every pixel of the spec's subarray on `detector`."""
    sub = subarray_for(detector, spec.subarray)
    full = _full_frame_bias(detector.upper(), float(spec.bias_level))
    y0, x0 = sub.ystart - 1, sub.xstart - 1
    return full[y0 : y0 + sub.ysize, x0 : x0 + sub.xsize].copy()


@functools.lru_cache(maxsize=16)
def _full_frame_flat(detector: str) -> np.ndarray:
    # Pixel response: a gentle gradient plus 1% pixel-to-pixel scatter, fixed
    # per detector; the FLAT reference is this same map.
    rng = _rng(_name_key(detector), 2)
    yy, xx = np.mgrid[0:FULL_SIZE, 0:FULL_SIZE] / FULL_SIZE
    flat = 1.0 + 0.03 * (xx - 0.5) - 0.02 * (yy - 0.5) + rng.normal(0.0, 0.01, xx.shape)
    flat = flat.astype(np.float32)
    flat.setflags(write=False)
    return flat


def detector_flat(spec: ProgramSpec, detector: str) -> np.ndarray:
    """Relative response of every pixel of the spec's subarray (reference pixels: 1)."""
    sub = subarray_for(detector, spec.subarray)
    full = _full_frame_flat(detector.upper())
    y0, x0 = sub.ystart - 1, sub.xstart - 1
    flat = full[y0 : y0 + sub.ysize, x0 : x0 + sub.xsize].copy()
    flat[reference_pixel_mask(spec, detector)] = 1.0
    return flat


def reference_pixel_mask(spec: ProgramSpec, detector: str) -> np.ndarray:
    """True where the subarray holds reference pixels (the full frame's 4-pixel border)."""
    sub = subarray_for(detector, spec.subarray)
    xs = np.arange(sub.xstart, sub.xstart + sub.xsize)
    ys = np.arange(sub.ystart, sub.ystart + sub.ysize)
    edge_x = (xs <= REFPIX_BORDER) | (xs > FULL_SIZE - REFPIX_BORDER)
    edge_y = (ys <= REFPIX_BORDER) | (ys > FULL_SIZE - REFPIX_BORDER)
    return edge_y[:, None] | edge_x[None, :]


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


def _rate_images(
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


def _ramps(spec: ProgramSpec, detector: str, rates: list[np.ndarray], rng: np.random.Generator):
    """uint16 ramps [nints, ngroups, ny, nx] read at the frame level, then grouped."""
    timing_frame = subarray_for(detector, spec.subarray).frame_time
    per_group = spec.nframes + spec.groupgap
    nframes_total = spec.ngroups * per_group - spec.groupgap
    refpix = reference_pixel_mask(spec, detector)
    flat = detector_flat(spec, detector)
    bias = detector_bias(spec, detector).astype(float)
    frame_noise = spec.readnoise / math.sqrt(2.0)  # the reference holds CDS noise
    ny, nx = rates[0].shape
    out = np.empty((spec.nints, spec.ngroups, ny, nx), dtype=np.uint16)
    for i in range(spec.nints):
        photons = rates[i] * flat + spec.dark_rate
        electrons_per_frame = np.where(refpix, 0.0, photons * spec.gain * timing_frame)
        drift = rng.normal(0.0, 5.0)  # per-integration bias offset, for refpix to remove
        collected = np.zeros((ny, nx))
        frames = np.empty((nframes_total, ny, nx))
        for f in range(nframes_total):
            collected += rng.poisson(electrons_per_frame)
            frames[f] = collected / spec.gain + rng.normal(0.0, frame_noise, (ny, nx))
        for g in range(spec.ngroups):
            first = g * per_group
            group = frames[first : first + spec.nframes].mean(axis=0)
            out[i, g] = np.clip(np.rint(group + bias + drift), 0, 65535).astype(np.uint16)
    return out


# --- headers --------------------------------------------------------------


def linear_wcs_keywords(att: np.ndarray, to_v2v3, *, crpix: tuple[float, float],
                        size: tuple[int, int], pixel_scale: float, vparity: int,
                        v3yangle: float) -> dict:
    """The level-1b WCS keywords of an aperture with a linear distortion:
    `to_v2v3` maps the file's 1-based pixels to V2/V3 (arcsec), `size` is
    (nx, ny), `pixel_scale` in arcsec."""
    from . import metadata

    xref, yref = crpix
    v2_ref, v3_ref = (float(v) for v in to_v2v3(xref, yref))
    ra_ref, dec_ref = (float(v) for v in tel_to_sky(att, v2_ref, v3_ref))
    up = tel_to_sky(att, *to_v2v3(xref, yref + 1.0))
    pa_aper = position_angle(ra_ref, dec_ref, float(up[0]), float(up[1]))
    nx, ny = size
    cra, cdec = tel_to_sky(att, *to_v2v3(np.array([0.5, nx + 0.5, nx + 0.5, 0.5]),
                                         np.array([0.5, 0.5, ny + 0.5, ny + 0.5])))
    angle = math.radians(pa_aper)
    return metadata.wcs_keywords(
        crpix=(xref, yref),
        crval=(ra_ref, dec_ref),
        cdelt=pixel_scale / 3600.0,
        pc=((-math.cos(angle), math.sin(angle)), (math.sin(angle), math.cos(angle))),
        v2v3_ref=(v2_ref, v3_ref),
        vparity=vparity,
        v3yangle=v3yangle,
        roll_ref=v3_position_angle(att, v2_ref, v3_ref),
        s_region=metadata.footprint(cra, cdec),
        pa_aper=pa_aper,
    )


def _wcs_keywords(detector: str, sub: Subarray, att: np.ndarray) -> dict:
    xref_full = sub.xstart - 1 + sub.xref
    yref_full = sub.ystart - 1 + sub.yref
    v2_ref, v3_ref = (float(v) for v in pixel_to_v2v3(detector, xref_full, yref_full))
    ra_ref, dec_ref = (float(v) for v in tel_to_sky(att, v2_ref, v3_ref))
    roll_ref = v3_position_angle(att, v2_ref, v3_ref)

    # Linear FITS WCS at the reference pixel, from the exact mapping.
    def sky_of(dx, dy):
        return tel_to_sky(att, *pixel_to_v2v3(detector, xref_full + dx, yref_full + dy))

    def tangent(ra, dec):
        r, d, r0, d0 = map(np.radians, (ra, dec, ra_ref, dec_ref))
        cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
        xi = np.cos(d) * np.sin(r - r0) / cosc
        eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / cosc
        return np.degrees(xi), np.degrees(eta)

    pa_aper = position_angle(ra_ref, dec_ref, *(float(v) for v in sky_of(0.0, 1.0)))
    xi_x, eta_x = tangent(*sky_of(1.0, 0.0))
    xi_y, eta_y = tangent(*sky_of(0.0, 1.0))
    cdelt = PIXEL_SCALE / 3600.0
    pc = np.array([[xi_x, xi_y], [eta_x, eta_y]], dtype=float) / cdelt

    corners_x = np.array([0.5, sub.xsize + 0.5, sub.xsize + 0.5, 0.5]) + sub.xstart - 1
    corners_y = np.array([0.5, 0.5, sub.ysize + 0.5, sub.ysize + 0.5]) + sub.ystart - 1
    cra, cdec = tel_to_sky(att, *pixel_to_v2v3(detector, corners_x, corners_y))
    return metadata.wcs_keywords(
        crpix=(sub.xref, sub.yref),
        crval=(ra_ref, dec_ref),
        cdelt=cdelt,
        pc=((float(pc[0, 0]), float(pc[0, 1])), (float(pc[1, 0]), float(pc[1, 1]))),
        v2v3_ref=(v2_ref, v3_ref),
        vparity=VIDL_PARITY,
        v3yangle=detector_geometry(detector).v3_idl_yangle,
        roll_ref=roll_ref,
        s_region=metadata.footprint(cra, cdec),
        pa_aper=pa_aper,
    )


def _populate(model, spec: ProgramSpec, detector: str, exposure: int, pointing: Pointing,
              segment: int = 1):
    m = model.meta
    det = detector.upper()
    geom = detector_geometry(det)
    sub = subarray_for(det, spec.subarray)
    t = exposure_timing(spec, exposure)
    att = pointing.reported_attitude

    name = spec.segment_names(exposure, detector)[segment - 1]
    metadata.set_file(m, name.filename(), "calstream synthetic NIRCam programs")
    metadata.set_observation(m, spec, exposure, t, TEMPLATES[spec.exp_type])
    metadata.set_visit(
        m,
        quality=pointing.quality,
        start_mjd=exposure_timing(spec, 1).start_mjd,
        total_exposures=spec.dithers,
        tsovisit=spec.tsovisit,
    )
    metadata.set_target(m, spec, "EXTENDED")

    i = m.instrument
    i.name = "NIRCAM"
    i.detector = det
    i.module = geom.module
    i.channel = "SHORT"
    i.filter = spec.filter
    i.pupil = spec.pupil

    metadata.set_exposure(
        m, spec, exposure, t, exp_type=spec.exp_type, noutputs=sub.noutputs, sca_num=geom.sca_num
    )
    metadata.set_subarray(m.subarray, sub)
    metadata.set_dither(
        m,
        pattern=spec.dither_pattern,
        points=min(spec.dithers, 4),
        total=spec.dithers,
        position=exposure,
        offset=pointing.offset,
    )
    metadata.set_pointing(
        m,
        aperture=aperture_name(det, sub.name),
        pps_aperture=aperture_name(spec.detectors[0], sub.name),
        wcs=_wcs_keywords(det, sub, att),
        v1=v1_pointing(att),
    )

    first, last = spec.segment_integrations()[segment - 1]
    if spec.segments > 1:
        e = m.exposure
        e.segment_number = segment
        e.segment_total = spec.segments
        e.integration_start = first
        e.integration_end = last

    if spec.nints > 1:
        # A segment's table holds its own integrations, numbered within the exposure.
        model.int_times = integration_times(spec, exposure)[first - 1 : last]


def integration_times(spec: ProgramSpec, exposure: int) -> np.ndarray:
    """The INT_TIMES table: start, mid, end of each integration, in MJD UTC and BJD TDB.

    BJD from the geocentre (astropy's built-in ephemeris, no download): JWST
    is about 5 light-seconds from Earth, which a synthetic table can ignore.
    """
    from astropy import units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    t = exposure_timing(spec, exposure)
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


def _uncal_model_class(date: str):
    """Level1bModel whose save keeps DATE at `date`.

    stdatamodels stamps DATE with the wall clock on every save (also inside the
    ASDF extension); pinning it makes a re-run write identical bytes. The class
    keeps its parent's name because DATAMODL is written from it.
    """
    from stdatamodels.jwst import datamodels

    class Level1bModel(datamodels.Level1bModel):
        def on_save(self, init):
            super().on_save(init)
            self.meta.date = date

    return Level1bModel


def simulate_program(
    out_dir: str | Path, spec: ProgramSpec = ProgramSpec(), *, seed: int | None = None
) -> list[Path]:
    """Write the visit's uncal files into `out_dir`, in observing order.

    `seed` overrides `spec.seed`. The same seed gives identical data arrays.
    A segmented exposure gives one file per segment; `spec.missing`
    exposures give none.
    """
    spec.validate()
    seed = spec.seed if seed is None else seed
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = program_truth(spec, seed=seed)
    # as if level-1b processing wrote the files an hour after the visit ended
    model_class = _uncal_model_class(isot(exposure_timing(spec, spec.dithers).end_mjd + 1 / 24))
    paths: list[Path] = []
    for exposure in spec.exposure_numbers:
        if exposure in spec.missing:
            continue
        pointing = exposure_pointing(spec, exposure)
        for detector in spec.detectors:
            rng = _rng(seed, 2, exposure, _name_key(detector))
            rates = _rate_images(spec, detector, truth, exposure, pointing.true_attitude)
            # The whole exposure is read out, then cut: its segments together
            # are the unsegmented exposure.
            ramps = _ramps(spec, detector, rates, rng)
            for segment, (first, last) in enumerate(spec.segment_integrations(), start=1):
                with model_class(data=ramps[first - 1 : last]) as model:
                    _populate(model, spec, detector, exposure, pointing, segment)
                    path = out / model.meta.filename
                    model.validate()
                    model.save(path)
                paths.append(path)
    return paths
