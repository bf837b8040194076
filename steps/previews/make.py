"""Making the previews of a run's products: the task a worker runs after the
products are committed. Each file on its own: one that cannot be previewed is
reported and skipped, never raised (a preview must not fail a calibration)."""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from pathlib import Path

from calstream.steps.failures import error_text
from calstream.steps.previews.images import preview_rgb, read_image
from calstream.steps.previews.plots import PLOTTERS, render
from calstream.steps.previews.png import encode_png, write_atomically

log = logging.getLogger("calstream.previews")


def preview_bytes(product: str, kind: str) -> tuple[bytes, bytes]:
    """(preview, thumbnail) PNG bytes of one product file."""
    with warnings.catch_warnings():
        # numpy's "All-NaN slice" and "Mean of empty slice": a pixel no
        # integration measured, a spectrum padded with NaN. Drawn as masked
        # or left out; each was a WARNING line in the daemon's log.
        warnings.simplefilter("ignore", RuntimeWarning)
        return _preview_bytes(product, kind)


def _preview_bytes(product: str, kind: str) -> tuple[bytes, bytes]:
    if kind == "image":
        preview, thumbnail = preview_rgb(*read_image(product))
        return encode_png(preview), encode_png(thumbnail)
    return render(PLOTTERS[kind](product))


def make_previews(previews: list[dict[str, str]]) -> dict:
    """Write the ``previews`` a product event lists (naming.planned_previews).

    Returns {"made": [paths], "failed": {product name: why}}."""
    by_product: dict[tuple[str, str], dict[str, Path]] = defaultdict(dict)
    for p in previews:
        directory = Path(p["path"]).parent.parent
        by_product[(str(directory / p["of"]), p["kind"])][p["role"]] = Path(p["path"])
    made, failed = [], {}
    for (product, kind), paths in by_product.items():
        try:
            preview, thumbnail = preview_bytes(product, kind)
            write_atomically(paths["preview"], preview)
            write_atomically(paths["thumbnail"], thumbnail)
            made += [str(paths["preview"]), str(paths["thumbnail"])]
        except Exception as exc:  # noqa: BLE001 - any product may be odd; the rest go on
            failed[Path(product).name] = error_text(exc)
            log.warning("no preview of %s: %s: %s", Path(product).name, type(exc).__name__, exc)
    return {"made": made, "failed": failed}
