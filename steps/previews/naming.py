"""Which product files get a preview, and where it goes. Pure: the daemon lists
the previews in the product event before they are made."""

from __future__ import annotations

from pathlib import Path

PREVIEW_DIR = "previews"
THUMB = "_thumb"

# Product suffix -> what kind of preview it gets.
IMAGE_SUFFIXES = frozenset({"rate", "cal", "i2d", "calints", "rateints", "s2d", "segm",
                            "crf", "bsub", "psfsub"})
SPECTRUM_SUFFIXES = frozenset({"x1d", "x1dints", "c1d"})
LIGHT_CURVE_SUFFIXES = frozenset({"phot", "whtlt"})


def suffix_of(path: str | Path) -> str:
    return Path(path).name.split(".", 1)[0].rsplit("_", 1)[-1]


def kind_of(path: str | Path) -> str | None:
    """image | spectrum | light_curve | interferometry, or None: no preview."""
    name, suffix = Path(path).name, suffix_of(path)
    if name.endswith(".fits") and suffix in IMAGE_SUFFIXES:
        return "image"
    if name.endswith(".fits") and suffix in SPECTRUM_SUFFIXES:
        return "spectrum"
    if name.endswith(".ecsv") and suffix in LIGHT_CURVE_SUFFIXES:
        return "light_curve"
    if name.endswith(".fits") and suffix.endswith("-oi"):  # ami-oi, aminorm-oi, amimulti-oi
        return "interferometry"
    return None


def planned_previews(product_paths: list[str]) -> list[dict[str, str]]:
    """The preview and the thumbnail of each product file that gets one,
    in ``<product dir>/previews/``."""
    planned = []
    for path in product_paths:
        kind = kind_of(path)
        if kind is None:
            continue
        product = Path(path)
        stem = product.name.split(".", 1)[0]
        directory = product.parent / PREVIEW_DIR
        planned.append({"of": product.name, "kind": kind, "role": "preview",
                        "path": str(directory / f"{stem}.png")})
        planned.append({"of": product.name, "kind": kind, "role": "thumbnail",
                        "path": str(directory / f"{stem}{THUMB}.png")})
    return planned
