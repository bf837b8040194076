"""What the offline stage-3 tests (ami3, coron3) share around the pipeline
runs: the kit's CRDS environment, product suffixes, the timing report."""

from __future__ import annotations

from pathlib import Path

from calstream.steps.crds_env import CRDS_VARS

from ..envutil import environ


def kit_crds_only(kit):
    """A context with only the kit's CRDS settings: none of the session's may leak in."""
    return environ({**dict.fromkeys(CRDS_VARS), **kit.crds_env})


def product_suffix(path: str) -> str:
    """"rateints" of ".../jw..._nrcalong_rateints.fits"."""
    return Path(path).name.rsplit("_", 1)[1].split(".")[0]


def report_timings(timings: dict[str, float]) -> None:
    print("\n" + "\n".join(f"  {k}: {v:.2f} s" for k, v in timings.items()))
