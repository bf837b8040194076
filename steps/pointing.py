"""Corrected pointing for a held exposure, and the mark an operator's release leaves.

The keywords are the ones jwst's ``set_telescope_pointing`` writes. They are
applied through stdatamodels rather than by editing FITS cards, so the FITS
header and the ASDF tree inside the file agree.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

# FITS keyword -> stdatamodels attribute path
POINTING_KEYWORDS: dict[str, str] = {
    "ENGQLPTG": "meta.visit.engdb_pointing_quality",
    "RA_V1": "meta.pointing.ra_v1",
    "DEC_V1": "meta.pointing.dec_v1",
    "PA_V3": "meta.pointing.pa_v3",
    "RA_REF": "meta.wcsinfo.ra_ref",
    "DEC_REF": "meta.wcsinfo.dec_ref",
    "ROLL_REF": "meta.wcsinfo.roll_ref",
    "CRVAL1": "meta.wcsinfo.crval1",
    "CRVAL2": "meta.wcsinfo.crval2",
    "PC1_1": "meta.wcsinfo.pc1_1",
    "PC1_2": "meta.wcsinfo.pc1_2",
    "PC2_1": "meta.wcsinfo.pc2_1",
    "PC2_2": "meta.wcsinfo.pc2_2",
    "S_REGION": "meta.wcsinfo.s_region",
}


def history_text(note: str, limit: int = 300) -> str:
    """``note`` as a HISTORY card holds it: printable ASCII (astropy refuses
    anything else), other characters as their escapes (``\\xe9``, ``\\n``).
    An operator's release reason is anyone's text: one with an accent or a
    dash failed every stage-2 run of the released exposure after jwst had
    run, and the exposure, released already, could not be released again."""
    return "".join(c if " " <= c <= "~" else c.encode("unicode_escape").decode("ascii")
                   for c in note)[:limit]


def _set(model, dotted: str, value) -> None:
    obj = model
    *parents, last = dotted.split(".")
    for name in parents:
        obj = getattr(obj, name)
    setattr(obj, last, value)


def apply_pointing(source: str | Path, keywords: Mapping[str, object], target: str | Path,
                   *, note: str) -> Path:
    """Write a copy of ``source`` with the corrected pointing ``keywords``.

    ``note`` goes into the file's history (which update, from where).
    """
    from stdatamodels.jwst import datamodels

    unknown = set(keywords) - set(POINTING_KEYWORDS)
    if unknown:
        raise ValueError(f"not pointing keywords: {sorted(unknown)}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    with datamodels.open(target) as model:
        for key, value in keywords.items():
            _set(model, POINTING_KEYWORDS[key], value)
        model.add_history_entry(history_text(note))
        model.save(target)
    return target


def annotate(paths: list[str], note: str) -> None:
    """Add a HISTORY card to each FITS product's primary header (after the run)."""
    from astropy.io import fits

    for path in paths:
        if path.endswith(".fits"):
            with fits.open(path, mode="update") as hdul:
                hdul[0].header.add_history(history_text(note))
