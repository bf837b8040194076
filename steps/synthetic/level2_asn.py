"""Minimal level-2 associations for synthetic exposures, in jwst's JSON format.

Enough for a test or the demo to hand stage 2 one exposure (and, when
asked, its companions); the planner builds the real ones from the pool of
product events. The fields are those of jwst's own level-2b rules
(asn_schema_jw_level2b.json), the name follows the archive's convention
``jw<program>-<acid>_<yyyymmddthhmmss>_<asn_type>_<NNNNN>_asn.json``, and
the version stamp comes from the science exposure's start, so the same
exposure always gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from calstream.steps.naming import parse_exposure_name
from calstream.steps.provenance import jwst_version

# (asn_type, asn_rule) by what the science member is.
KINDS = {
    "image2": ("image2", "Asn_Lv2Image"),
    # A PSF reference (IS_PSF) is calibrated alone, as a special member.
    "psf-image2": ("image2", "Asn_Lv2ImageSpecial"),
    "tso-image2": ("tso-image2", "Asn_Lv2ImageTSO"),
    "spec2": ("spec2", "Asn_Lv2Spec"),
    "tso-spec2": ("tso-spec2", "Asn_Lv2SpecTSO"),
    "lrs-nod-spec2": ("spec2", "Asn_Lv2MIRLRSFixedSlitNod"),
}
NOT_DEGRADED = "No known degraded exposures in association."


def _version_id(science: Path) -> str:
    from astropy.io import fits

    header = fits.getheader(science, 0)
    stamp = f"{header['DATE-OBS']}T{header['TIME-OBS']}"
    return stamp.split(".")[0].replace("-", "").replace(":", "").lower()


def write_level2_asn(
    out_dir: str | Path,
    science: str | Path,
    *,
    kind: str = "image2",
    companions: Iterable[tuple[str | Path, str]] = (),
    asn_id: str = "a3001",
    sequence: int = 1,
) -> Path:
    """Write a level-2 association for `science` (a rate or rateints file) into `out_dir`.

    `companions` are (path, exptype) pairs: ("..._rate.fits", "background"),
    ... Member names are written relative to `out_dir` when they lie under it
    (jwst resolves them from the association's directory), else absolute.
    """
    try:
        asn_type, asn_rule = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown association kind {kind!r}; one of {sorted(KINDS)}") from None
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    science = Path(science).resolve()
    name = parse_exposure_name(science.name)

    def member(path: Path, exptype: str) -> dict:
        path = Path(path).resolve()
        expname = str(path.relative_to(out)) if path.is_relative_to(out) else str(path)
        return {"expname": expname, "exptype": exptype}

    version_id = _version_id(science)
    asn = {
        "asn_type": asn_type,
        "asn_rule": asn_rule,
        "asn_id": asn_id,
        "asn_pool": f"jw{name.program}_{version_id}_pool.csv",
        "program": name.program,
        "target": "t001",
        "version_id": version_id,
        "code_version": jwst_version(),
        "degraded_status": NOT_DEGRADED,
        "constraints": "calstream synthetic: one science exposure",
        "products": [
            {
                "name": name.exposure_id,
                "members": [member(science, "science")]
                + [member(Path(p), t) for p, t in companions],
            }
        ],
    }
    path = out / f"jw{name.program}-{asn_id}_{version_id}_{asn_type}_{sequence:05d}_asn.json"
    path.write_text(json.dumps(asn, indent=4) + "\n")
    return path
