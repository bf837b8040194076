"""``calstream simulate DIR``: a synthetic program, its reference files and CRDS cache."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from calstream.daemon.operations import embedded_default, logs
from calstream.daemon.operations.cli.registry import command, count_argument, pause_argument
from calstream.daemon.operations.config import ConfigError


def _program_argument(text: str) -> str:
    """A JWST program id, 5 digits (``--program 1`` named files no JWST name has,
    and ended in the name parser's traceback)."""
    if not re.fullmatch(r"[0-9]{5}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a program id of 5 digits (e.g. 01234)")
    return text


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=count_argument(0), default=1)
    p.add_argument("--program", type=_program_argument, help="5 digits (default 01234)")
    # SUB160P: read on the one simulated detector, so the visit's headers can
    # say when it is complete (SUB160 is read on the whole module).
    p.add_argument("--subarray", default="SUB160P")
    p.add_argument("--dithers", type=count_argument(1))
    p.add_argument("--detectors", nargs="+")
    p.add_argument("--planned", type=count_argument(1), nargs="+", help="exposure numbers with ENGQLPTG=PLANNED")
    p.add_argument("--no-references", action="store_true", help="only the uncal files")
    # steps.synthetic.kit.KIT_MODES, spelled out: the parser must not import numpy.
    p.add_argument("--modes", nargs="+", default=["imaging"],
                   choices=("imaging", "timeseries", "lrs", "mosaic", "segmented", "missing",
                            "coron", "ami", "wfss", "dark", "guider", "dhs"),
                   help="what the program observes (default: imaging). mosaic: observation "
                        "001's second visit, one exposure delivered late; segmented: a time "
                        "series in 3 segments; missing: a 4-dither visit whose exposure 3 "
                        "is never written; coron: NIRCam coronagraphy, science and PSF "
                        "reference; ami: a NIRISS AMI target and its calibrator; wfss: a "
                        "NIRISS direct image and grism image (image3 feeds spec2); dark: a "
                        "NIRCam dark (calwebb_dark); guider: the FGS ACQ1, ACQ2, TRACK and "
                        "FINEGUIDE files of observation 001's guiding (calwebb_guider); dhs: "
                        "a NIRCam DHS time series in a stripe subarray (build 12.3; spec2)")
    p.add_argument("--inbox", type=Path, help="then deliver the files here, as a downlink would")
    p.add_argument("--interval", type=pause_argument, default=0.0, help="seconds between files")
    p.add_argument("--pieces", type=count_argument(1), default=1,
                   help="write each file in N pieces")
    p.add_argument("--piece-delay", type=pause_argument, default=0.0,
                   help="seconds between pieces")


def _report(kit, out_dir: Path) -> None:
    """The files on stdout (one a line, for a pipe); what to know about them on stderr."""
    from calstream.steps.synthetic.kit import env_lines

    for f in kit.uncal_files:
        print(f)
    print(f"\n# plan: {kit.pool_path} (jwst association pool), {kit.manifest_path}",
          file=sys.stderr)
    for eid in kit.missing:
        print(f"# missing (planned, never written): {eid}", file=sys.stderr)
    for f in kit.late:
        print(f"# late (delivered last): {f.name}", file=sys.stderr)
    for visit, detectors in kit.unsimulated_detectors().items():
        print(f"# warning: {visit}: the headers say {', '.join(detectors)} are read too, but "
              "no file is simulated for them: its stage-3 candidates close only after the "
              "quiet period, degraded (a point-source subarray such as SUB160P is read on "
              "one detector)", file=sys.stderr)
    if kit.crds_env:
        (out_dir / "crds.env").write_text(env_lines(kit.crds_env))
        config = embedded_default.write(out_dir)
        print(f"\n# configuration of the embedded default (offline: no Gaia): {config}; "
              "calstream run --config it", file=sys.stderr)
        print(f"\n# CRDS: an offline cache with context {kit.context}; for calstream run:",
              file=sys.stderr)
        print(env_lines(kit.crds_env), file=sys.stderr, end="")


@command("simulate", "write a synthetic program, reference files and CRDS cache",
         flags=("--log-level",), flag_overrides={"--log-level": dict(default="INFO")},
         arguments=_arguments)
def cmd_simulate(args: argparse.Namespace) -> int:
    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    logs.setup(args.log_level or "INFO", False)
    spec_args = {"program": args.program, "subarray": args.subarray}
    if args.dithers:
        spec_args["dithers"] = args.dithers
    if args.detectors:
        spec_args["detectors"] = tuple(args.detectors)
    if args.planned:
        spec_args["planned"] = tuple(args.planned)
    spec = ProgramSpec(**{k: v for k, v in spec_args.items() if v is not None})
    # The operator's options judged before anything is written: a subarray,
    # detector or planned exposure the visit cannot have was the simulator's
    # traceback, some of the program's files written by then.
    try:
        spec.validate()
    except ValueError as exc:
        raise ConfigError(f"simulate: {exc}") from None
    for directory, what in ((args.out_dir, "DIR"), (args.inbox, "--inbox")):
        if directory is not None and directory.exists() and not directory.is_dir():
            raise ConfigError(f"simulate: {what} {directory} is a file, not a directory")
    kit = build_kit(args.out_dir, spec, seed=args.seed, references=not args.no_references,
                    modes=tuple(args.modes))
    _report(kit, Path(args.out_dir))
    if args.inbox:
        from calstream.steps.synthetic.downlink import deliver

        deliver(kit.delivery_order(), args.inbox, interval=args.interval, pieces=args.pieces,
                piece_delay=args.piece_delay)
    return 0
