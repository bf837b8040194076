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

This module is the driver: it writes the files and their headers. What it
draws on lives beside it: `imaging_spec` (the visit, its timing),
`nircam_detectors` (geometry, bias, flat), `imaging_pointing` (dithers and
attitudes), `imaging_scene` (the stars), `detector_noise` (the ramps),
`level1b_wcs` (the WCS keywords) and `uncal_files` (deterministic saving).
The names below that come from those modules stay importable from here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import metadata
from calstream.steps.synthetic.attitude import (
    attitude_matrix,
    position_angle,
    sky_to_tel,
    solve_attitude,
    tel_to_sky,
    v1_pointing,
    v3_position_angle,
)
from calstream.steps.synthetic.detector_noise import name_key, read_ramps, rng
from calstream.steps.synthetic.focal_plane import Subarray, ideal_to_v2v3, v2v3_to_ideal
from calstream.steps.synthetic.imaging_pointing import Pointing, dither_offset, exposure_pointing
from calstream.steps.synthetic.imaging_scene import (
    ProgramTruth,
    Star,
    program_truth,
    rate_images,
    star_pixel_positions,
    target_pixel_position,
)
from calstream.steps.synthetic.imaging_spec import (
    TEMPLATES,
    ProgramSpec,
    exposure_timing,
    integration_times,
)
from calstream.steps.synthetic.level1b_wcs import linear_wcs_keywords, tangent_wcs_keywords
from calstream.steps.synthetic.nircam_detectors import (
    DETECTORS,
    FULL_SIZE,
    PIXEL_SCALE,
    READOUT_PATTERNS,
    REFPIX_BORDER,
    SUBARRAY_SIZES,
    VIDL_PARITY,
    DetectorGeometry,
    aperture_name,
    detector_bias,
    detector_flat,
    detector_geometry,
    pixel_to_v2v3,
    reference_pixel_mask,
    subarray_for,
    v2v3_to_pixel,
)
from calstream.steps.synthetic.timing import ExposureTiming, ramp_timing
from calstream.steps.synthetic.uncal_files import UncalWriter
from calstream.steps.synthetic.visit import POINTING_CALCULATED, POINTING_PLANNED, VisitId

# The names callers import from here, wherever they now live.
__all__ = [
    "DETECTORS", "FULL_SIZE", "PIXEL_SCALE", "POINTING_CALCULATED", "POINTING_PLANNED",
    "READOUT_PATTERNS", "REFPIX_BORDER", "SUBARRAY_SIZES", "TEMPLATES", "VIDL_PARITY",
    "DetectorGeometry", "ExposureTiming", "Pointing", "ProgramSpec", "ProgramTruth", "Star",
    "Subarray", "VisitId", "aperture_name", "attitude_matrix", "detector_bias", "detector_flat",
    "detector_geometry", "dither_offset", "exposure_pointing", "exposure_timing",
    "ideal_to_v2v3", "integration_times", "linear_wcs_keywords", "pixel_to_v2v3",
    "position_angle", "program_truth", "ramp_timing", "reference_pixel_mask",
    "simulate_program", "sky_to_tel", "solve_attitude", "star_pixel_positions",
    "subarray_for", "target_pixel_position", "tel_to_sky", "v1_pointing", "v2v3_to_ideal",
    "v2v3_to_pixel", "v3_position_angle",
]


def _wcs_keywords(detector: str, sub: Subarray, att: np.ndarray) -> dict:
    return tangent_wcs_keywords(
        att, lambda x, y: pixel_to_v2v3(detector, x, y), xstart=sub.xstart, ystart=sub.ystart,
        size=(sub.xsize, sub.ysize), crpix=(sub.xref, sub.yref), pixel_scale=PIXEL_SCALE,
        vparity=VIDL_PARITY, v3yangle=detector_geometry(detector).v3_idl_yangle)


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


def simulate_program(
    out_dir: str | Path, spec: ProgramSpec | None = None, *, seed: int | None = None
) -> list[Path]:
    """Write the visit's uncal files into `out_dir`, in observing order.

    `seed` overrides `spec.seed`. The same seed gives identical data arrays.
    A segmented exposure gives one file per segment; `spec.missing`
    exposures give none. No `spec`: a `ProgramSpec()`.
    """
    spec = ProgramSpec() if spec is None else spec
    spec.validate()
    seed = spec.seed if seed is None else seed
    truth = program_truth(spec, seed=seed)
    writer = UncalWriter(out_dir, exposure_timing(spec, spec.dithers).end_mjd)
    paths: list[Path] = []
    for exposure in spec.exposure_numbers:
        if exposure in spec.missing:
            continue
        pointing = exposure_pointing(spec, exposure)
        for detector in spec.detectors:
            rates = rate_images(spec, detector, truth, exposure, pointing.true_attitude)
            # The whole exposure is read out, then cut: its segments together
            # are the unsegmented exposure.
            ramps = read_ramps(
                spec, rates, flat=detector_flat(spec, detector),
                refpix=reference_pixel_mask(spec, detector),
                bias=detector_bias(spec, detector),
                frame_time=subarray_for(detector, spec.subarray).frame_time,
                noise=rng(seed, 2, exposure, name_key(detector)))
            for segment, (first, last) in enumerate(spec.segment_integrations(), start=1):
                paths.append(writer.write(ramps[first - 1 : last], functools.partial(
                    _populate, spec=spec, detector=detector, exposure=exposure,
                    pointing=pointing, segment=segment)))
    return paths
