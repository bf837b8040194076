"""One call for everything the embedded default needs: a synthetic program,
reference files for it, an offline CRDS cache, and the environment to use it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from calstream.steps.crds_env import offline_crds_env

from .crds_cache import build_crds_cache
from .program import ProgramSpec, simulate_program
from .references import write_reference_files


@dataclass
class Kit:
    root: Path
    uncal_files: list[Path]
    context: str | None = None
    crds_env: dict[str, str] = field(default_factory=dict)


def build_kit(root: Path, spec: ProgramSpec | None = None, *, seed: int = 1,
              references: bool = True) -> Kit:
    root = Path(root).absolute()
    spec = spec or ProgramSpec()
    files = simulate_program(root / "uncal", spec, seed=seed)
    kit = Kit(root, sorted(files))
    if references:
        refs = write_reference_files(root / "references", spec)
        kit.context = build_crds_cache(root / "crds", refs)
        kit.crds_env = offline_crds_env(root / "crds", kit.context)
    return kit


def env_lines(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
