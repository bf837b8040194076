"""Writing level-1b uncal files that are the same bytes on every run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic.metadata import isot


def uncal_model_class(date: str, model: str = "Level1bModel"):
    """Level1bModel (or `model`: GuiderRawModel) whose save keeps DATE at `date`.

    stdatamodels stamps DATE with the wall clock on every save (also inside the
    ASDF extension); pinning it makes a re-run write identical bytes. The class
    keeps its parent's name because DATAMODL is written from it.
    """
    from stdatamodels.jwst import datamodels

    class Pinned(getattr(datamodels, model)):
        def on_save(self, init):
            super().on_save(init)
            self.meta.date = date

    Pinned.__name__ = Pinned.__qualname__ = model
    return Pinned


class UncalWriter:
    """Writes a visit's uncal files into `out_dir`, each dated as if level-1b
    processing wrote it an hour after the visit ended (`visit_end_mjd`), as
    `model` (the datamodel class name: guide-star data is a GuiderRawModel)."""

    def __init__(self, out_dir: str | Path, visit_end_mjd: float, model: str = "Level1bModel"):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self._model_class = uncal_model_class(isot(visit_end_mjd + 1 / 24), model)

    def write(self, data: np.ndarray, populate: Callable) -> Path:
        """One file: the ramps `data`, with headers `populate(model)` sets."""
        with self._model_class(data=data) as model:
            populate(model)
            path = self.out / model.meta.filename
            model.validate()
            model.save(path)
        return path
