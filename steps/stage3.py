"""Step settings the stage-3 pipelines need to run here: offline, on jwst 3.0.

The one place for them; `association_run.run_association` applies them under
the caller's own `steps`, so a deployment with network access (or other
needs) overrides any of them. What needs no setting was checked on the
synthetic program: image3's source_catalog finds its APCORR and ABVEGAOFFSET
references in CRDS like any other type, tso3 combines a segmented exposure's
calints as they come, and spec3 runs the MIRI LRS nod pair (with each nod's
x1d as background) with its defaults, and ami3 fits the NIRISS AMI target
and calibrator with its defaults too (the commissioning affine distortion,
hence no rotation search; oversample 3: ~5 s an exposure of 3 SUB80
integrations). Its THROUGHPUT and NRM references come from CRDS; nothing
it runs needs stpsf or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

IMAGE3 = "calwebb_image3"
TSO3 = "calwebb_tso3"
SPEC3 = "calwebb_spec3"

__all__ = ["IMAGE3", "SPEC3", "TSO3", "stage3_settings"]


def _image3(association: Mapping[str, Any]) -> dict:
    return {
        # Absolute alignment downloads the Gaia catalog from MAST at run time:
        # there is no network here. jwst 3.0's default is already "", but a CRDS
        # pars-tweakregstep may ask for GAIADR3; relative alignment of the
        # members to one another still runs.
        "tweakreg": {"abs_refcat": ""},
    }


_SETTINGS = {IMAGE3: _image3}


def stage3_settings(pipeline: str, association: Mapping[str, Any]) -> dict:
    """The ``steps`` overrides `pipeline` needs to calibrate `association` offline.

    `pipeline` is the alias (calwebb_image3, ...); other names get none.
    """
    settings = _SETTINGS.get(pipeline)
    return settings(association) if settings else {}
