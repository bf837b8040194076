"""The identity of a calibration: what makes two runs "the same work".

Two runs with the same inputs (by content digest), pipeline, CRDS context,
parameters and software versions produce the same products, so the second
need not run. Anything that can change a product belongs in the identity;
nothing else does (no paths, no timestamps), so a redelivery is recognised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# Bump when calstream changes how it calls a pipeline in a way that changes products.
# 2: image3 no longer forces tweakreg.abs_refcat = "" (CRDS pars files decide).
RECIPE_VERSION = 2


@cache
def jwst_version() -> str:
    """The installed jwst version, without importing jwst (slow, and the
    deciders must not import it)."""
    try:
        return version("jwst")
    except PackageNotFoundError:
        return "not-installed"


def work_id(*, pipeline: str, input_digests: Iterable[str], crds_context: str,
            parameters: Mapping[str, Any] | None = None, software: Mapping[str, str] | None = None,
            namespace: str = "live") -> str:
    identity = {
        "pipeline": pipeline,
        "inputs": sorted(input_digests),
        "crds_context": crds_context,
        "parameters": parameters or {},
        "software": dict(software) if software is not None
        else {"jwst": jwst_version(), "recipe": str(RECIPE_VERSION)},
        "namespace": namespace,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def made_from(message: Any) -> tuple[str, str, tuple[str, ...]] | None:
    """What ties a product to the work order that made it: its stage, name
    and inputs' digests, the same in both (the stage too: an exposure's
    detector1 product has its name, and a rate file could be made an input
    by hand). Not the work id: an order that leaves the CRDS context to the
    daemon has another work id than its product, which names the context
    the run resolved. None for a message (untrusted) that has no such stage,
    name or inputs."""
    try:
        return str(message["stage"]), str(message["product_name"]), tuple(sorted(
            str(i["digest"]) for i in message.get("inputs") or ()))
    except (KeyError, TypeError, AttributeError):
        return None
