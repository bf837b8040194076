"""A NIRCam dark exposure (NRC_DARK), for calwebb_dark.

A dark is read like the imaging visit, with the shutter closed: the same
detector, subarray and readout, no sky and no stars, only bias, dark
current and noise (`dark_visit` makes it from the imaging spec, so the
imaging machinery writes it). A dark has no guide star, so its pointing is
PLANNED: calwebb_dark uses no pointing, and calstream holds nothing for it
(docs/routing.md, "Holds").

jwst runs calwebb_dark *instead of* detector1 on it. Its near-IR steps ask
CRDS for MASK (dq_init), SATURATION and SUPERBIAS (saturation), IPC, SUPERBIAS,
REFPIX and SIRSKERNEL (refpix: not applicable outside NIRSpec IRS2 and SIRS,
'N/A' in the context), LINEARITY: the NIRCam detector set the visit's
references hold anyway (references.py, written for this spec too). Added
here: PARS-DARKPIPELINE, as the operational context has one. As jwst's
documentation says of that one, it skips ipc; and it gives the product
jwst's documented suffix, ``_dark`` (without it stpipe names the product
after the class: ``_darkpipeline``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from calstream.steps.synthetic.imaging_spec import ProgramSpec
from calstream.steps.synthetic.reference_models import AUTHOR, PEDIGREE, USEAFTER, save_reference
from calstream.steps.synthetic.references import _StepParameters

OBSERVATION = "010"
VISIT_START = "2024-01-15T16:00:00.000"
PARAMETER_TYPES = ("pars-darkpipeline",)


def dark_visit(spec: ProgramSpec) -> ProgramSpec:
    """One dark exposure on `spec`'s detectors, subarray and readout (observation 010)."""
    return dataclasses.replace(
        spec, exp_type="NRC_DARK", observation=OBSERVATION, visit="001",
        visit_start=VISIT_START, target_name="NONE", dithers=1, n_stars=0, sky_rate=0.0,
        target_flux=0.0, tsovisit=False, segments=1, pointing_offset=(0.0, 0.0),
        planned=(1,), missing=(), late=())


def _pars_darkpipeline() -> _StepParameters:
    return _StepParameters({
        "class": "jwst.pipeline.calwebb_dark.DarkPipeline",
        "name": "DarkPipeline",
        "parameters": {"suffix": "dark"},
        "steps": [{"class": "jwst.ipc.ipc_step.IPCStep", "name": "ipc",
                   "parameters": {"skip": True}}],
        "meta": {
            "author": AUTHOR, "date": USEAFTER,
            "description": "Synthetic calwebb_dark parameters: skip ipc, products named _dark",
            "instrument": {"name": "NIRCAM"}, "origin": "calstream", "pedigree": PEDIGREE,
            "reftype": "pars-darkpipeline", "telescope": "JWST", "useafter": USEAFTER,
        },
    })


def write_dark_parameters(ref_dir: str | Path) -> dict[str, list[Path]]:
    """The NIRCam PARS-DARKPIPELINE reference; {reftype: [path]} for `build_crds_cache`."""
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"pars-darkpipeline": [save_reference(_pars_darkpipeline(),
                                                 out / "nircam_pars-darkpipeline.asdf")]}
