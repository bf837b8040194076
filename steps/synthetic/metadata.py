"""Level-1b header blocks that the synthetic NIRCam and MIRI exposures share.

Each writer assigns its keywords in one fixed order: that order is the order
of the saved ASDF tree, and a re-run must write the same bytes.
"""

from __future__ import annotations


def isot(mjd: float) -> str:
    from astropy.time import Time

    return Time(mjd, format="mjd", scale="utc", precision=3).isot


def _assign(node, values: dict) -> None:
    """Set `values` on a meta node in the dict's order (the tree's order)."""
    for name, value in values.items():
        setattr(node, name, value)


def set_file(m, filename: str, title: str) -> None:
    m.filename = filename
    m.origin = "STScI"
    m.telescope = "JWST"
    m.data_processing_software_version = "calstream-synthetic"
    m.program.title = title
    m.program.pi_name = "Synthetic, Calstream"
    m.program.category = "GO"
    m.program.continuation_id = 0


def set_observation(m, spec, exposure: int, timing, template: str) -> None:
    start_iso = isot(timing.start_mjd)
    date, time = start_iso.split("T")
    _assign(m.observation, {
        "date": date, "time": time, "date_beg": start_iso, "date_end": isot(timing.end_mjd),
        "program_number": spec.program, "observation_number": spec.observation,
        "visit_number": spec.visit, "visit_group": spec.visit_group,
        "sequence_id": spec.sequence, "activity_id": spec.activity,
        "exposure_number": str(exposure),
        "visit_id": f"{spec.program}{spec.observation}{spec.visit}",
        "obs_id": (f"V{spec.program}{spec.observation}{spec.visit}"
                   f"P00000000{spec.visit_group}{spec.sequence}{spec.activity}"),
        "template": template, "observation_label": "calstream synthetic", "bkgdtarg": False,
    })


def set_visit(
    m, *, quality: str, start_mjd: float, total_exposures: int, tsovisit: bool
) -> None:
    _assign(m.visit, {
        "engineering_quality": "OK", "engdb_pointing_quality": quality,
        "type": "PRIME_TARGETED_FIXED", "start_time": isot(start_mjd).replace("T", " "),
        "status": "SUCCESSFUL", "total_exposures": total_exposures, "internal_target": False,
        "too_visit": False, "tsovisit": tsovisit, "crowded_field": False,
    })


def set_target(m, spec, source_type: str) -> None:
    _assign(m.target, {
        "proposer_name": spec.target_name, "catalog_name": spec.target_name, "type": "FIXED",
        "ra": spec.target_ra, "dec": spec.target_dec,
        "proposer_ra": spec.target_ra, "proposer_dec": spec.target_dec,
        "ra_uncertainty": 0.0, "dec_uncertainty": 0.0, "source_type_apt": source_type,
    })


def set_exposure(
    m, spec, exposure: int, timing, *, exp_type: str, noutputs: int, sca_num: int
) -> None:
    t = timing
    _assign(m.exposure, {
        "type": exp_type, "count": exposure, "prime_parallel": "PRIME",
        "readpatt": spec.readpatt, "noutputs": noutputs, "nints": spec.nints,
        "integration_start": 1, "integration_end": spec.nints, "ngroups": spec.ngroups,
        "nframes": spec.nframes, "groupgap": spec.groupgap, "frame_divisor": spec.nframes,
        "drop_frames1": 0, "drop_frames3": 0, "nsamples": 1, "sample_time": 10.0,
        "frame_time": t.frame_time, "group_time": t.group_time,
        "integration_time": t.integration_time, "exposure_time": t.exposure_time,
        "effective_exposure_time": t.exposure_time, "measurement_time": t.measurement_time,
        "duration": t.duration, "elapsed_exposure_time": t.duration,
        "nresets_at_start": 1, "nresets_between_ints": 1,
        "start_time": t.start_mjd, "mid_time": t.mid_mjd, "end_time": t.end_mjd,
        "start_time_mjd": t.start_mjd, "mid_time_mjd": t.mid_mjd, "end_time_mjd": t.end_mjd,
        "zero_frame": False, "data_problem": False, "sca_num": sca_num, "gain_factor": 1.0,
        "detmode": "EXPOSURE",
    })


def set_subarray(s, sub) -> None:
    """`s`: a model's meta.subarray (exposure or reference); `sub`: a `focal_plane.Subarray`."""
    _assign(s, {name: getattr(sub, name) for name in
                ("name", "xstart", "ystart", "xsize", "ysize", "fastaxis", "slowaxis")})


def set_dither(
    m,
    *,
    pattern: str,
    points: int,
    total: int,
    position: int,
    offset: tuple[float, float],
) -> None:
    _assign(m.dither, {
        "primary_type": pattern, "primary_dither_type": "NONE", "primary_points": points,
        "position_number": position, "pattern_start": 1, "total_points": total,
        "subpixel_total_points": 1, "subpixel_pattern": "NONE", "pattern_size": "DEFAULT",
        "x_offset": offset[0], "y_offset": offset[1],
    })


def footprint(ra, dec) -> str:
    """S_REGION: the polygon through the corners at (`ra`, `dec`), degrees."""
    return "POLYGON ICRS " + " ".join(f"{r:.9f} {d:.9f}" for r, d in zip(ra, dec, strict=True))


def wcs_keywords(
    *,
    crpix: tuple[float, float],
    crval: tuple[float, float],
    cdelt: float,
    pc: tuple[tuple[float, float], tuple[float, float]],
    v2v3_ref: tuple[float, float],
    vparity: int,
    v3yangle: float,
    roll_ref: float,
    s_region: str,
    pa_aper: float,
) -> dict:
    """A level-1b linear TAN WCS at the aperture's reference pixel, as `set_pointing` takes it."""
    return {
        "wcsaxes": 2,
        "crpix1": crpix[0],
        "crpix2": crpix[1],
        "crval1": crval[0],
        "crval2": crval[1],
        "ctype1": "RA---TAN",
        "ctype2": "DEC--TAN",
        "cunit1": "deg",
        "cunit2": "deg",
        "cdelt1": cdelt,
        "cdelt2": cdelt,
        "pc1_1": pc[0][0],
        "pc1_2": pc[0][1],
        "pc2_1": pc[1][0],
        "pc2_2": pc[1][1],
        "v2_ref": v2v3_ref[0],
        "v3_ref": v2v3_ref[1],
        "vparity": vparity,
        "v3yangle": v3yangle,
        "ra_ref": crval[0],
        "dec_ref": crval[1],
        "roll_ref": roll_ref,
        "siaf_xref_sci": crpix[0],
        "siaf_yref_sci": crpix[1],
        "s_region": s_region,
        "pa_aper": pa_aper,
    }


def set_pointing(
    m, *, aperture: str, pps_aperture: str, wcs: dict, v1: tuple[float, float, float]
) -> None:
    """Aperture, WCS and spacecraft pointing; `v1`: RA, Dec of V1 and PA_V3 there."""
    m.aperture.name = aperture
    m.aperture.pps_name = pps_aperture
    for key, value in wcs.items():
        if key != "pa_aper":
            setattr(m.wcsinfo, key, value)
    m.aperture.position_angle = wcs["pa_aper"]
    m.pointing.ra_v1, m.pointing.dec_v1, m.pointing.pa_v3 = v1
    # No velocity aberration is simulated: a scale of exactly 1 at the reference.
    m.velocity_aberration.scale_factor = 1.0
    m.velocity_aberration.va_ra_ref = wcs["ra_ref"]
    m.velocity_aberration.va_dec_ref = wcs["dec_ref"]
