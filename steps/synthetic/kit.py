"""One call for everything the embedded default needs: a synthetic program,
reference files for it, an offline CRDS cache, and the environment to use it.

`modes` picks what the program observes, all in one CRDS context so that a
single environment calibrates the lot:

* "imaging": the NIRCam imaging visit (`program.ProgramSpec`) -> image2 (cal, i2d)
* "timeseries": a NIRCam imaging time series (`program.TimeSeriesSpec`) -> image2 (calints)
* "lrs": a nodded MIRI LRS fixed-slit visit (`spectroscopy.LrsSpec`) -> spec2 (cal, s2d, x1d)
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from calstream.steps.crds_env import offline_crds_env

from .crds_cache import build_crds_cache
from .program import ProgramSpec, simulate_program
from .references import write_visit_reference_files
from .spec_references import write_lrs_reference_files
from .spectroscopy import LrsSpec, simulate_lrs
from .timeseries import TimeSeriesSpec

MODES = ("imaging", "timeseries", "lrs")


@dataclass
class Kit:
    root: Path
    uncal_files: list[Path]
    context: str | None = None
    crds_env: dict[str, str] = field(default_factory=dict)
    # Mode -> its uncal files, in observing order; mode -> the spec that made them.
    by_mode: dict[str, list[Path]] = field(default_factory=dict)
    specs: dict[str, object] = field(default_factory=dict)


def build_kit(root: Path, spec: ProgramSpec | None = None, *, seed: int = 1,
              references: bool = True, modes: Iterable[str] = ("imaging",),
              timeseries: TimeSeriesSpec | None = None, lrs: LrsSpec | None = None) -> Kit:
    """Simulate the `modes` of one program, with references in one CRDS context.

    `spec` is the imaging visit; `timeseries` and `lrs` default to the same
    program's observations 2 and 3. Each mode draws its noise from its own
    stream (`seed` plus the mode's place in MODES), so a mode's data do not
    depend on which others are built.
    """
    root = Path(root).absolute()
    modes = list(dict.fromkeys(modes))
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    spec = spec or ProgramSpec()
    specs: dict[str, object] = {}
    if "imaging" in modes:
        specs["imaging"] = spec
    if "timeseries" in modes:
        specs["timeseries"] = timeseries or TimeSeriesSpec(program=spec.program)
    if "lrs" in modes:
        specs["lrs"] = lrs or LrsSpec(program=spec.program)

    by_mode: dict[str, list[Path]] = {}
    for mode, mode_spec in specs.items():
        mode_seed = seed + MODES.index(mode)
        if mode == "lrs":
            by_mode[mode] = simulate_lrs(root / "uncal", mode_spec, seed=mode_seed)
        else:
            by_mode[mode] = simulate_program(root / "uncal", mode_spec, seed=mode_seed)
    kit = Kit(root, sorted(p for files in by_mode.values() for p in files),
              by_mode=by_mode, specs=specs)
    if references:
        refs: dict[str, list[Path]] = {}
        nircam = [s for m, s in specs.items() if m != "lrs"]
        if nircam:
            refs = write_visit_reference_files(root / "references", nircam)
        if "lrs" in specs:
            for reftype, paths in write_lrs_reference_files(root / "references", specs["lrs"]).items():
                refs.setdefault(reftype, []).extend(paths)
        kit.context = build_crds_cache(root / "crds", refs)
        kit.crds_env = offline_crds_env(root / "crds", kit.context)
    return kit


def env_lines(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
