"""When a visit's exposures happen: the timing keywords every mode writes."""

from __future__ import annotations

from dataclasses import dataclass


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
