"""The embedded default's configuration: what an offline, self-contained run sets.

`calstream demo` loads it from ``<work_dir>/calstream.toml`` and `calstream
simulate DIR` writes it to ``DIR/calstream.toml`` next to ``crds.env``, so
`calstream run --config DIR/calstream.toml` (and `calstream config show
--config ...`) runs and shows exactly what the demo does. Nothing here is
hard-coded in the pipelines: a deployment with network access simply does
not set it, and the CRDS parameter reference files decide.
"""

from __future__ import annotations

from pathlib import Path

FILE_NAME = "calstream.toml"

TEXT = """\
# calstream's embedded default: an offline run on a synthetic program.
# Step parameters as strun's --steps.<step>.<arg>; they win over the CRDS
# parameter reference files (pars-*), which apply to everything not set here.
[calstream.steps.calwebb_image3.tweakreg]
# Absolute alignment to Gaia downloads the catalogue from MAST: there is no
# network here. A CRDS pars-tweakregstep may ask for GAIADR3; relative
# alignment of the members to one another still runs.
abs_refcat = ""
"""


def write(directory: Path) -> Path:
    """Write the embedded default's configuration into ``directory``; its path."""
    path = Path(directory) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEXT)
    return path
