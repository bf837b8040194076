"""Step settings the stage-2 and stage-3 pipelines need to run here: offline, on jwst 3.0.

The one place for them; `association_run.run_association` applies them under
the caller's own ``steps`` (`settings_for`), so a deployment with network
access (or other needs) overrides any of them.

What needs no setting was checked on the synthetic program: image3's
source_catalog finds its APCORR and ABVEGAOFFSET references in CRDS like any
other type, tso3 combines a segmented exposure's calints as they come, spec3
runs the MIRI LRS nod pair (with each nod's x1d as background) with its
defaults, and ami3 fits the NIRISS AMI target and calibrator with its
defaults too (the commissioning affine distortion, hence no rotation search;
oversample 3: ~5 s an exposure of 3 SUB80 integrations). Its THROUGHPUT and
NRM references come from CRDS; nothing it runs needs stpsf or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

SPEC2 = "calwebb_spec2"
IMAGE3 = "calwebb_image3"
TSO3 = "calwebb_tso3"
SPEC3 = "calwebb_spec3"

__all__ = ["merge_steps", "settings_for", "spec2_workarounds", "stage3_settings"]


def merge_steps(defaults: Mapping[str, dict], steps: Mapping[str, dict] | None) -> dict:
    """``defaults`` overridden step by step, parameter by parameter, by ``steps``."""
    merged = {name: dict(pars) for name, pars in defaults.items()}
    for name, pars in (steps or {}).items():
        merged[name] = {**merged.get(name, {}), **pars}
    return merged


def spec2_workarounds(science: Path) -> dict:
    """Step overrides that jwst 3.0 needs to calibrate `science` at all.

    MIR_LRS-FIXEDSLIT from rateints: spec2 turns the LRS exposure into a
    SlitModel before targ_centroid, so its "is this a cube" test no longer
    sees the integrations and resample_spec fails on the 3-D slit ("not a
    2D image"). Time series get no s2d anyway; skipping resample_spec gives
    calints and x1dints.
    """
    from astropy.io import fits

    if not science.exists():
        return {}
    exp_type = fits.getheader(science, 0).get("EXP_TYPE")
    if exp_type == "MIR_LRS-FIXEDSLIT" and fits.getheader(science, "SCI").get("NAXIS", 0) == 3:
        return {"resample_spec": {"skip": True}}
    return {}


def _image3(association: Mapping[str, Any]) -> dict:
    return {
        # Absolute alignment downloads the Gaia catalog from MAST at run time:
        # there is no network here. jwst 3.0's default is already "", but a CRDS
        # pars-tweakregstep may ask for GAIADR3; relative alignment of the
        # members to one another still runs.
        "tweakreg": {"abs_refcat": ""},
    }


_STAGE3_SETTINGS = {IMAGE3: _image3}


def stage3_settings(pipeline: str, association: Mapping[str, Any]) -> dict:
    """The ``steps`` overrides `pipeline` needs to calibrate `association` offline.

    `pipeline` is the alias (calwebb_image3, ...); other names get none.
    """
    settings = _STAGE3_SETTINGS.get(pipeline)
    return settings(association) if settings else {}


def settings_for(pipeline: str, association: Mapping[str, Any],
                 steps: Mapping[str, dict] | None) -> dict:
    """The ``steps`` to run ``pipeline`` with on ``association``: the overrides
    jwst 3.0 needs for its inputs, under the caller's ``steps`` (which win)."""
    if pipeline != SPEC2:
        return merge_steps(stage3_settings(pipeline, association), steps)
    science = [Path(m["expname"]) for p in association.get("products", [])
               for m in p.get("members", []) if m.get("exptype") == "science"]
    return merge_steps(spec2_workarounds(science[0]) if science else {}, steps)
