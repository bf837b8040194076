"""One call for everything the embedded default needs: a synthetic program,
reference files for it, an offline CRDS cache, and the environment to use it.

`modes` picks what the program observes, all in one CRDS context so that a
single environment calibrates the lot:

* "imaging": the NIRCam imaging visit (`program.ProgramSpec`) -> image2 (cal, i2d)
* "timeseries": a NIRCam imaging time series (`program.TimeSeriesSpec`) -> image2 (calints)
* "lrs": a nodded MIRI LRS fixed-slit visit (`spectroscopy.LrsSpec`) -> spec2 (cal, s2d, x1d)

and, for stage 3 and the streaming tests (`PROGRAM_MODES`), more of the same program:

* "mosaic": observation 001's second visit (002), the imaging field again,
  shifted by `MOSAIC_OFFSET`, the same stars: image3 on o001 makes a mosaic
  of both visits. Its exposure 2 is delivered late (`Kit.late`).
* "segmented": a time series (observation 004) whose exposure stage 1 cut
  into 3 segments (-seg001..003, EXSEGTOT=3): tso3 combines them.
* "missing": an imaging visit (observation 005) that plans 4 dithers
  (NEXPOSUR=4) of which exposure 3 is never written (`Kit.missing`).

and modes of other instruments, each with its own stage 3 (`OTHER_MODES`):

* "ami": a NIRISS AMI visit (`ami.AmiSpec`, observation 006), a target and
  its PSF calibrator -> image2 (calints) -> ami3.
* "coron": NIRCam coronagraphy, a science and a PSF-reference observation
  (`coronagraphy.CoronSpec`, observations 008 and 009) -> image2 (calints)
  -> coron3.
* "wfss": NIRISS wide field slitless spectroscopy (`wfss.WfssSpec`,
  observation 011): a direct image -> image2 -> image3 (i2d, cat, segm),
  whose products the grism image's spec2 takes -> spec3.

and build 12.3's new modes (`NEW_MODES`):

* "dhs": a NIRCam DHS time series (`dhs.DhsSpec`, observation 012): NRCA1
  read in the SUB41STRIPE1_DHS stripe subarray -> spec2 (calints, x1dints);
  no stage 3 (jwst keeps DHS out of tso3).

and the data jwst calibrates with another pipeline instead of detector1
(`CALIBRATION_MODES`):

* "dark": a NIRCam dark (`dark.dark_visit`, observation 010) -> calwebb_dark.
* "guider": the FGS guide-star files of observation 001's visit (ACQ1, ACQ2,
  TRACK, FINEGUIDE: `guider.GuiderSpec`), named as jwst names them ->
  calwebb_guider.

Every kit also writes the program's plan: a jwst association pool of every
planned exposure file, the missing one included (`Kit.pool_path`), and the
same as JSON (`Kit.manifest_path`); see `asn_pool`.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from calstream.steps.crds_env import offline_crds_env

from .ami import AmiSpec, simulate_ami
from .ami_references import write_ami_reference_files
from .asn_pool import write_manifest, write_pool
from .coron_references import write_coron_reference_files
from .coronagraphy import CoronSpec, simulate_coronagraphy
from .crds_cache import build_crds_cache
from .dark import dark_visit, write_dark_parameters
from .dhs import DhsSpec, simulate_dhs
from .dhs_references import write_dhs_reference_files
from .guider import GuiderSpec, simulate_guider, write_guider_reference_files
from .program import ProgramSpec, simulate_program
from .references import write_visit_reference_files
from .spec_references import write_lrs_reference_files
from .spectroscopy import LrsSpec, simulate_lrs
from .timeseries import TimeSeriesSpec
from .wfss import WfssSpec, simulate_wfss
from .wfss_references import write_wfss_reference_files

MODES = ("imaging", "timeseries", "lrs")
PROGRAM_MODES = ("mosaic", "segmented", "missing")
# Modes in modules of their own, with stage-2 handling of their own (so not
# in MODES, whose every mode the stage-2 tests run), and last here: a mode's
# noise seed is its place in KIT_MODES, and the others' must not move.
OTHER_MODES = ("ami", "coron", "wfss")
CALIBRATION_MODES = ("dark", "guider")
# Every mode whose files the program's plan lists (the pool, the manifest).
ALL_MODES = MODES + PROGRAM_MODES + OTHER_MODES + ("dark",)
# Files no plan lists: guide-star data is no planned exposure (jwst's pools
# have no row for it). Seeded after ALL_MODES.
UNPLANNED_MODES = ("guider",)
# Build 12.3's new modes, seeded after the others.
NEW_MODES = ("dhs",)
KIT_MODES = ALL_MODES + UNPLANNED_MODES + NEW_MODES
# The modes with a simulation of their own; the others are `simulate_program`'s.
SIMULATORS = {"lrs": simulate_lrs, "coron": simulate_coronagraphy, "ami": simulate_ami,
              "wfss": simulate_wfss, "guider": simulate_guider, "dhs": simulate_dhs}
# Ideal-frame arcsec between the two visits of observation 001: a sixth of
# the SUB160 field, so the tiles overlap enough for tweakreg to tie them.
MOSAIC_OFFSET = (0.8, 0.5)


@dataclass
class Kit:
    root: Path
    uncal_files: list[Path]
    context: str | None = None
    crds_env: dict[str, str] = field(default_factory=dict)
    # Mode -> its uncal files, in observing order; mode -> the spec that made them.
    by_mode: dict[str, list[Path]] = field(default_factory=dict)
    specs: dict[str, object] = field(default_factory=dict)
    # Exposure ids (file stems without suffix) planned but never written.
    missing: list[str] = field(default_factory=list)
    # Written files a downlink delivers after all the others.
    late: list[Path] = field(default_factory=list)
    pool_path: Path | None = None
    manifest_path: Path | None = None

    def delivery_order(self) -> list[Path]:
        """The uncal files in the order a downlink delivers them: late ones last."""
        late = set(self.late)
        return [p for p in self.uncal_files if p not in late] + [
            p for p in self.uncal_files if p in late]

    def unsimulated_detectors(self) -> dict[str, list[str]]:
        """Visit -> the detectors its headers say are read but no file was
        simulated for (SUB160 is read on all five detectors of the module).
        Such a visit never looks complete, so its stage-3 candidates close
        only after the quiet period, degraded."""
        from astropy.io import fits

        from calstream.steps.completeness import expected_detectors
        from calstream.steps.naming import parse_exposure_name
        from calstream.steps.routing import level1_pipeline

        expected: dict[str, set[str]] = {}
        simulated: dict[str, set[str]] = {}
        for path in self.uncal_files:
            name = parse_exposure_name(path.name)
            header = fits.getheader(path, 0)
            if level1_pipeline(header) != "calwebb_detector1":
                continue  # darks, guide-star data: no stage 3 waits for their visit
            expected.setdefault(name.visit_id, set()).update(expected_detectors(header))
            simulated.setdefault(name.visit_id, set()).add(name.detector.lower())
        return {v: sorted(expected[v] - simulated[v]) for v in sorted(expected)
                if expected[v] - simulated[v]}


def build_kit(root: Path, spec: ProgramSpec | None = None, *, seed: int = 1,
              references: bool = True, modes: Iterable[str] = ("imaging",),
              timeseries: TimeSeriesSpec | None = None, lrs: LrsSpec | None = None,
              coron: CoronSpec | None = None, ami: AmiSpec | None = None,
              wfss: WfssSpec | None = None) -> Kit:
    """Simulate the `modes` of one program, with references in one CRDS context.

    `spec` is the imaging visit; `timeseries`, `lrs` and `ami` default to the
    same program's observations 2, 3 and 6. Each mode draws its noise from its own
    stream (`seed` plus the mode's place in KIT_MODES), so a mode's data do not
    depend on which others are built.
    """
    root = Path(root).absolute()
    modes = list(dict.fromkeys(modes))
    unknown = set(modes) - set(KIT_MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {KIT_MODES}")
    spec = spec or ProgramSpec()
    specs: dict[str, object] = {}
    if "imaging" in modes:
        specs["imaging"] = spec
    if "timeseries" in modes:
        specs["timeseries"] = timeseries or TimeSeriesSpec(program=spec.program)
    if "lrs" in modes:
        specs["lrs"] = lrs or LrsSpec(program=spec.program)
    if "coron" in modes:
        specs["coron"] = coron or CoronSpec(program=spec.program)
    specs.update(program_specs(spec, seed, [m for m in modes if m in PROGRAM_MODES]))
    if "ami" in modes:
        specs["ami"] = ami or AmiSpec(program=spec.program)
    if "wfss" in modes:
        specs["wfss"] = wfss or WfssSpec(program=spec.program)
    if "dark" in modes:
        specs["dark"] = dark_visit(spec)
    if "dhs" in modes:
        specs["dhs"] = DhsSpec(program=spec.program)
    if "guider" in modes:
        specs["guider"] = GuiderSpec(program=spec.program, observation=spec.observation,
                                     visit=spec.visit, visit_start=spec.visit_start)

    by_mode: dict[str, list[Path]] = {}
    for mode, mode_spec in specs.items():
        mode_seed = seed + KIT_MODES.index(mode)
        simulate = SIMULATORS.get(mode, simulate_program)
        by_mode[mode] = simulate(root / "uncal", mode_spec, seed=mode_seed)
    kit = Kit(root, sorted(p for files in by_mode.values() for p in files),
              by_mode=by_mode, specs=specs)
    for mode_spec in specs.values():
        for e in getattr(mode_spec, "missing", ()):
            kit.missing += [n.exposure_id for d in mode_spec.detectors
                            for n in mode_spec.segment_names(e, d)]
        late = {n.filename() for e in getattr(mode_spec, "late", ()) for d in mode_spec.detectors
                for n in mode_spec.segment_names(e, d)}
        kit.late += [p for p in kit.uncal_files if p.name in late]
    plan = list(specs.values())
    kit.pool_path = write_pool(root, plan)
    kit.manifest_path = write_manifest(root / "manifest.json", plan, kit.missing,
                                       [p.name.rsplit("_", 1)[0] for p in kit.late])
    if references:
        refs: dict[str, list[Path]] = {}
        nircam = [s for s in specs.values() if isinstance(s, ProgramSpec)]
        if nircam:
            refs = write_visit_reference_files(root / "references", nircam)
        writers = {"lrs": write_lrs_reference_files, "coron": write_coron_reference_files,
                   "ami": write_ami_reference_files, "wfss": write_wfss_reference_files,
                   "dhs": write_dhs_reference_files}
        for mode in (m for m in writers if m in specs):
            for reftype, paths in writers[mode](root / "references", specs[mode]).items():
                refs.setdefault(reftype, []).extend(paths)
        if "dark" in specs:
            refs.update(write_dark_parameters(root / "references"))
        if "guider" in specs:
            for reftype, paths in write_guider_reference_files(root / "references",
                                                               specs["guider"]).items():
                refs.setdefault(reftype, []).extend(paths)
        kit.context = build_crds_cache(root / "crds", refs,
                                       exposures=map(_selected_by, kit.uncal_files))
        kit.crds_env = offline_crds_env(root / "crds", kit.context)
    return kit


def _selected_by(uncal: Path) -> tuple[str, str, str, str]:
    """What CRDS selects an exposure's references by: instrument, detector,
    subarray, exposure type (its primary header's)."""
    from astropy.io import fits

    header = fits.getheader(uncal, 0)
    return tuple(str(header.get(k) or "N/A").strip()  # type: ignore[return-value]
                 for k in ("INSTRUME", "DETECTOR", "SUBARRAY", "EXP_TYPE"))


def program_specs(spec: ProgramSpec, seed: int, modes: Iterable[str]) -> dict[str, ProgramSpec]:
    """The `PROGRAM_MODES` specs, made from the imaging `spec` of the same program."""
    # The stars of the field are those the imaging mode draws with its seed.
    scene = spec.scene_seed if spec.scene_seed is not None else seed + ALL_MODES.index("imaging")
    dithered = dataclasses.replace(spec, planned=(), missing=(), late=(), scene_seed=scene)
    made: dict[str, ProgramSpec] = {}
    for mode in modes:
        if mode == "mosaic":
            made[mode] = dataclasses.replace(
                dithered, visit="002", visit_start="2024-01-15T11:00:00.000",
                pointing_offset=MOSAIC_OFFSET, late=(min(2, spec.dithers),))
        elif mode == "segmented":
            made[mode] = TimeSeriesSpec(program=spec.program, observation="004",
                                        visit_start="2024-01-15T12:00:00.000", nints=9,
                                        segments=3, transit_integrations=(4, 6))
        elif mode == "missing":
            made[mode] = dataclasses.replace(
                dithered, observation="005", visit_start="2024-01-15T13:00:00.000",
                dithers=4, missing=(3,))
    return made


def env_lines(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
