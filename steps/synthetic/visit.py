"""What every synthetic mode's spec shares: where its visit sits in the
program (`VisitId`), how its readout pattern reads (`PatternReadout`) and,
for single-detector modes, its fixed optics (`FixedSetup`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from calstream.steps.naming import ExposureName

POINTING_CALCULATED = "CALCULATED_TRACK_TR_202111"
POINTING_PLANNED = "PLANNED"


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
class DetectorLevels:
    """How a simulated detector responds, as its references describe it: dark
    current (DN/s), bias (DN), gain (e-/DN), CDS read noise (DN), saturation (DN)."""

    dark_rate: float = 0.01
    bias_level: float = 12000.0
    gain: float = 2.0
    readnoise: float = 10.0
    saturation: float = 60000.0


class PatternReadout:
    """nframes and groupgap of the spec's `readpatt`, from the mode's table
    READOUT_PATTERNS: pattern -> (frames averaged per group, frames skipped)."""

    READOUT_PATTERNS: ClassVar[dict[str, tuple[int, int]]] = {}

    @property
    def nframes(self) -> int:
        return self.READOUT_PATTERNS[self.readpatt][0]

    @property
    def groupgap(self) -> int:
        return self.READOUT_PATTERNS[self.readpatt][1]

    def check_readpatt(self, instrument: str, min_groups: int = 1, too_few: str = "") -> None:
        """A known pattern, and at least `min_groups` groups (else ValueError(`too_few`))."""
        if self.readpatt not in self.READOUT_PATTERNS:
            raise ValueError(f"unknown {instrument} readout pattern {self.readpatt!r}")
        if self.ngroups < min_groups:
            raise ValueError(too_few)


class FixedSetup(PatternReadout):
    """A mode read on one detector, one subarray and one filter (and pupil, if
    the instrument has one): the spec reports them from the mode's constants."""

    DETECTOR: ClassVar[str]
    SUBARRAY: ClassVar  # a focal_plane.Subarray
    FILTER: ClassVar[str]
    PUPIL: ClassVar[str | None] = None

    @property
    def detectors(self) -> tuple[str, ...]:
        return (self.DETECTOR.lower(),)

    @property
    def subarray(self) -> str:
        return self.SUBARRAY.name

    @property
    def filter(self) -> str:
        return self.FILTER

    @property
    def pupil(self) -> str:
        if self.PUPIL is None:
            raise AttributeError("pupil")
        return self.PUPIL
