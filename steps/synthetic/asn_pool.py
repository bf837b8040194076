"""The plan of a synthetic program: a jwst association pool and a JSON manifest.

Operations know what a program will observe before any file arrives (APT,
the pool maker): headers alone cannot say how many visits an observation has
or that an exposure was lost. The pool lists every planned exposure file --
every segment, and the exposures `missing` says were never written -- in the
format of jwst's pools (``|``-separated, one header row; the columns of a
2025 DMS pool, jwst/associations/tests/data/jw09505_20251216t202003_pool.csv),
so jwst's own `AssociationPool.read` and generator read it. EXSEGNUM is
added beside EXSEGTOT: one row per segment file needs it to say which.

The manifest is the same plan as plain JSON, for code that wants no
astropy table: one entry per planned file, with whether it was written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from calstream.steps.naming import ExposureName
from calstream.steps.synthetic import coronagraphy as coron
from calstream.steps.synthetic.program import (
    TEMPLATES,
    ProgramSpec,
    aperture_name,
    detector_geometry,
    exposure_timing,
)
from calstream.steps.synthetic.spectroscopy import APERTURE as LRS_APERTURE
from calstream.steps.synthetic.spectroscopy import LrsSpec

COLUMNS = (
    "FILENAME", "OBS_ID", "PROGRAM", "OBS_NUM", "VISIT", "VISIT_ID", "VISITGRP", "VISITYPE",
    "SEQ_ID", "ACT_ID", "EXPOSURE", "EXP_TYPE", "NEXPOSUR", "EXPCOUNT", "INSTRUME", "DETECTOR",
    "CHANNEL", "TARGETID", "TARGPROP", "TARGNAME", "TARGTYPE", "TEMPLATE", "PNTGTYPE",
    "PNTG_SEQ", "TARGORDN", "EXPSPCIN", "DITHPTIN", "MOSTILNO", "MODULE", "FILTER", "PUPIL",
    "DITHERID", "PATTTYPE", "PATTSTRT", "NUMDTHPT", "PATTSIZE", "SUBPXPTS", "PATT_NUM",
    "SUBPIXEL", "APERNAME", "SDP_VER", "SUBARRAY", "GRATING", "FXD_SLIT", "BAND", "GWA_XTIL",
    "GWA_YTIL", "ASN_CANDIDATE", "EXPOSERR", "IS_PSF", "IS_IMPRT", "BKGDTARG", "TSOVISIT",
    "MSASTATE", "MSAMETFL", "OPMODE", "LAMP", "SPEC_NUM", "SPAT_NUM", "DMS_NOTE", "EXSEGTOT",
    "EXSEGNUM", "NINTS", "NGROUPS", "MTSHADOW",
)
NULL = "NULL"
SDP_VERSION = "calstream"


def _flag(value: bool) -> str:
    return "T" if value else "F"


def observation_candidate(spec) -> str:
    """The acid of the spec's observation candidate, as jwst's pools write it."""
    return f"o{int(spec.observation):03d}"


def _common(spec, name: ExposureName, exposure: int, target_id: int) -> dict[str, str]:
    return {
        "FILENAME": name.filename(),
        "OBS_ID": (f"V{spec.program}{spec.observation}{spec.visit}"
                   f"P00000000{spec.visit_group}{spec.sequence}{spec.activity}"),
        # DMS pools write the numbers as integers: no leading zeros.
        "PROGRAM": str(int(spec.program)),
        "OBS_NUM": str(int(spec.observation)),
        "VISIT": str(int(spec.visit)),
        "VISIT_ID": f"{spec.program}{spec.observation}{spec.visit}",
        "VISITGRP": str(int(spec.visit_group)),
        "VISITYPE": "PRIME_TARGETED_FIXED",
        "SEQ_ID": spec.sequence,
        "ACT_ID": spec.activity,
        "EXPOSURE": str(exposure),
        "EXPCOUNT": str(exposure),
        "TARGETID": str(target_id),
        "TARGPROP": spec.target_name,
        "TARGNAME": spec.target_name,
        "TARGTYPE": "FIXED",
        "PNTGTYPE": "SCIENCE",
        "PNTG_SEQ": str(exposure),
        "TARGORDN": "1",
        "EXPSPCIN": str(exposure),
        "DITHPTIN": str(exposure),
        "MOSTILNO": "1",
        "PATTSTRT": "1",
        "PATTSIZE": "DEFAULT",
        "PATT_NUM": str(exposure),
        "SDP_VER": SDP_VERSION,
        "ASN_CANDIDATE": f"[('{observation_candidate(spec)}', 'OBSERVATION')]",
        "BKGDTARG": "F",
        "LAMP": "OFF",
        "NINTS": str(spec.nints),
        "NGROUPS": str(spec.ngroups),
        "MTSHADOW": "NONE",
    }


def _nircam_rows(spec: ProgramSpec, target_id: int) -> list[dict[str, str]]:
    rows = []
    for exposure in spec.exposure_numbers:
        for detector in spec.detectors:
            for segment, name in enumerate(spec.segment_names(exposure, detector), start=1):
                row = _common(spec, name, exposure, target_id)
                row.update({
                    "EXP_TYPE": spec.exp_type,
                    "NEXPOSUR": str(spec.dithers),
                    "INSTRUME": "NIRCAM",
                    "DETECTOR": detector.upper(),
                    "CHANNEL": "SHORT",
                    "TEMPLATE": TEMPLATES[spec.exp_type],
                    "MODULE": detector_geometry(detector).module,
                    "FILTER": spec.filter,
                    "PUPIL": spec.pupil,
                    "PATTTYPE": spec.dither_pattern,
                    "NUMDTHPT": str(spec.dithers),
                    "APERNAME": aperture_name(detector, spec.subarray),
                    "SUBARRAY": spec.subarray.upper(),
                    "TSOVISIT": _flag(spec.tsovisit),
                    "EXSEGTOT": str(spec.segments),
                    "EXSEGNUM": str(segment),
                })
                rows.append(row)
    return rows


def _lrs_rows(spec: LrsSpec, target_id: int) -> list[dict[str, str]]:
    rows = []
    for exposure in spec.exposure_numbers:
        row = _common(spec, spec.exposure_name(exposure), exposure, target_id)
        row.update({
            "EXP_TYPE": "MIR_LRS-FIXEDSLIT",
            "NEXPOSUR": str(spec.nods),
            "INSTRUME": "MIRI",
            "DETECTOR": spec.detectors[0].upper(),
            "TEMPLATE": "MIRI Low Resolution Spectroscopy",
            "FILTER": spec.filter,
            "PATTTYPE": "ALONG-SLIT-NOD",
            "NUMDTHPT": str(spec.nods),
            "APERNAME": LRS_APERTURE,
            "SUBARRAY": spec.subarray,
            "TSOVISIT": "F",
            "EXSEGTOT": "1",
            "EXSEGNUM": "1",
        })
        rows.append(row)
    return rows


def _coron_rows(spec: coron.CoronSpec, targets: dict[str, int]) -> list[dict[str, str]]:
    rows = []
    for observation, psf in spec.observations():
        # One observation's view of the spec: its number, target and integrations.
        view = spec.view(psf)
        row = _common(view, spec.exposure_name(psf), 1,
                      targets.setdefault(view.target_name, len(targets) + 1))
        row.update({
            "EXP_TYPE": coron.EXP_TYPE,
            "NEXPOSUR": "1",
            "INSTRUME": "NIRCAM",
            "DETECTOR": coron.DETECTOR,
            "CHANNEL": "LONG",
            "TEMPLATE": coron.TEMPLATE,
            "MODULE": "A",
            "FILTER": coron.FILTER,
            "PUPIL": coron.PUPIL,
            "PATTTYPE": "NONE",
            "NUMDTHPT": "1",
            "APERNAME": coron.APERTURE,
            "SUBARRAY": coron.SUBARRAY.name,
            # APT's coronagraphy candidate joins the science and PSF observations.
            "ASN_CANDIDATE": f"[('{spec.candidate}', 'CORONAGRAPHY'), "
                             f"('o{int(observation):03d}', 'OBSERVATION')]",
            "IS_PSF": _flag(psf),
            "TSOVISIT": "F",
            "EXSEGTOT": "1",
            "EXSEGNUM": "1",
        })
        rows.append(row)
    return rows


def _start(spec) -> float:
    if isinstance(spec, coron.CoronSpec):
        return coron.exposure_timing(spec, False).start_mjd
    if hasattr(spec, "start_mjd"):
        return spec.start_mjd()
    if isinstance(spec, LrsSpec):
        from calstream.steps.synthetic.spectroscopy import exposure_timing as lrs_timing

        return lrs_timing(spec, 1).start_mjd
    return exposure_timing(spec, 1).start_mjd


def pool_rows(specs: Sequence) -> list[dict[str, str]]:
    """Every planned exposure file of `specs` (NIRCam `ProgramSpec`s, `LrsSpec`s),
    in observing order; TARGETID numbers the distinct targets as APT does."""
    targets: dict[str, int] = {}
    rows: list[dict[str, str]] = []
    for spec in sorted(specs, key=_start):
        if hasattr(spec, "pool_rows"):
            # A spec that writes its own rows (several targets: AMI's calibrator).
            rows.extend({c: r.get(c, NULL) for c in COLUMNS} for r in spec.pool_rows(targets))
            continue
        if isinstance(spec, coron.CoronSpec):
            made = _coron_rows(spec, targets)
        else:
            target_id = targets.setdefault(spec.target_name, len(targets) + 1)
            made = (_lrs_rows(spec, target_id) if isinstance(spec, LrsSpec)
                    else _nircam_rows(spec, target_id))
        rows.extend({c: r.get(c, NULL) for c in COLUMNS} for r in made)
    return rows


def pool_name(specs: Sequence) -> str:
    """jw<program>_<yyyymmddthhmmss>_pool.csv, stamped an hour after the last visit
    started (as a pool is made after the data): the same plan gives the same name."""
    from calstream.steps.synthetic.metadata import isot

    program = {s.program for s in specs}
    if len(program) != 1:
        raise ValueError(f"a pool holds one program, not {sorted(program)}")
    stamp = isot(max(_start(s) for s in specs) + 1 / 24)
    compact = stamp.split(".")[0].replace("-", "").replace(":", "").lower()
    return f"jw{program.pop()}_{compact}_pool.csv"


def write_pool(out_dir: str | Path, specs: Sequence) -> Path:
    """The pool of `specs` in `out_dir` (see module docstring)."""
    rows = pool_rows(specs)
    path = Path(out_dir) / pool_name(specs)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["|".join(COLUMNS)] + ["|".join(r[c] for c in COLUMNS) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def manifest_entries(rows: Iterable[dict[str, str]], missing: Iterable[str] = (),
                     late: Iterable[str] = ()) -> list[dict]:
    """Plain-JSON planned exposures: one entry per pool row, with the row's
    keywords as its ``header`` (so `calstream plan load` reads the same plan
    from the manifest as from the pool, steps/plans.py).

    ``missing`` / ``late``: exposure ids (file stem without suffix) never
    written / delivered last.
    """
    from calstream.steps.naming import parse_exposure_name
    from calstream.steps.plans import pool_candidates, pool_row_header

    missing, late = set(missing), set(late)
    entries = []
    for r in rows:
        name = parse_exposure_name(r["FILENAME"])
        eid = name.exposure_id
        entries.append({
            "exposure_id": eid,
            "filename": r["FILENAME"],
            "program": name.program,
            "observation": name.observation,
            "visit": name.visit,
            "exposure": name.exposure,
            "segment": int(r["EXSEGNUM"]),
            "segments": int(r["EXSEGTOT"]),
            "detector": r["DETECTOR"].lower(),
            "exp_type": r["EXP_TYPE"],
            "total_exposures": int(r["NEXPOSUR"]),
            "candidates": list(pool_candidates(r["ASN_CANDIDATE"], r["FILENAME"])),
            "delivery": "missing" if eid in missing else "late" if eid in late else "normal",
            "header": pool_row_header(r),
        })
    return entries


def write_manifest(path: str | Path, specs: Sequence, missing: Iterable[str] = (),
                   late: Iterable[str] = ()) -> Path:
    path = Path(path)
    entries = manifest_entries(pool_rows(specs), missing, late)
    programs = sorted({e["program"] for e in entries})
    # The shape `calstream plan load` reads (steps/plans.py, parse_manifest).
    path.write_text(json.dumps({"program": ",".join(programs), "exposures": entries},
                               indent=1) + "\n")
    return path
