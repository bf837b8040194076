"""Step settings jwst 3.0 needs to calibrate some inputs at all.

Only workarounds of jwst bugs live here, decided by the input's own content;
`association_run.run_association` applies them under the caller's ``steps``
(`settings_for`), which win. Everything else -- what a deployment wants, and
what the offline embedded default must switch off (absolute alignment to
Gaia, which needs the internet) -- is configuration
(`steps.step_parameters`; the embedded default's in
`daemon/operations/embedded_default.py`), so the CRDS parameter reference
files apply wherever nobody configured otherwise.

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

from calstream.steps.step_parameters import merge_steps

SPEC2 = "calwebb_spec2"

__all__ = ["settings_for", "spec2_workarounds"]


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


def settings_for(pipeline: str, association: Mapping[str, Any],
                 steps: Mapping[str, dict] | None) -> dict:
    """The ``steps`` to run ``pipeline`` with on ``association``: the overrides
    jwst 3.0 needs for its inputs, under the caller's ``steps`` (which win)."""
    if pipeline != SPEC2:
        return merge_steps(None, steps)
    science = [Path(m["expname"]) for p in association.get("products", [])
               for m in p.get("members", []) if m.get("exptype") == "science"]
    return merge_steps(spec2_workarounds(science[0]) if science else {}, steps)
