"""The pieces every synthetic CRDS reference is made of, whatever the mode:
the CRDS metadata stamp, the detector models the simulations make trivial
(constant gain, identity linearity, ...), the linear DISTORTION, references
written from plain trees, and saving.

`detector_references` builds a mode's per-detector set from these.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic.focal_plane import Subarray
from calstream.steps.synthetic.metadata import set_subarray

AUTHOR = "calstream synthetic"
PEDIGREE = "DUMMY"
USEAFTER = "2022-01-01T00:00:00"


def dq_def(flags: Iterable[str]):
    from stdatamodels.jwst.datamodels import dqflags

    rows = []
    for name in flags:
        value = int(dqflags.pixel[name])
        rows.append((value.bit_length() - 1, value, name, name.lower().replace("_", " ")))
    return rows


def stamp_reference(
    model,
    instrument: str,
    reftype: str,
    description: str,
    *,
    detector: str | None = None,
    subarray: Subarray | None = None,
) -> None:
    """The CRDS metadata of a synthetic reference; no detector or subarray: valid for any."""
    m = model.meta
    m.reftype = reftype.upper()
    m.description = description
    m.author = AUTHOR
    m.pedigree = PEDIGREE
    m.useafter = USEAFTER
    m.telescope = "JWST"
    m.origin = "calstream"
    m.instrument.name = instrument
    if detector is not None:
        m.instrument.detector = detector
    if subarray is not None:
        set_subarray(m.subarray, subarray)


def refpix_mask(reference_pixels: np.ndarray):
    from stdatamodels.jwst.datamodels import MaskModel, dqflags

    # REFERENCE_PIXEL alone: refpix ignores reference pixels also marked DO_NOT_USE.
    flag = dqflags.pixel["REFERENCE_PIXEL"]
    model = MaskModel(dq=np.where(reference_pixels, flag, 0).astype(np.uint32),
                      strict_validation=True)
    model.dq_def = dq_def(["DO_NOT_USE", "REFERENCE_PIXEL"])
    return model


def constant_saturation(shape: tuple[int, int], level: float):
    from stdatamodels.jwst.datamodels import SaturationModel

    model = SaturationModel(data=np.full(shape, level, dtype=np.float32),
                            dq=np.zeros(shape, dtype=np.uint32), strict_validation=True)
    model.dq_def = dq_def(["DO_NOT_USE", "NO_SAT_CHECK"])
    return model


def bias_superbias(bias: np.ndarray):
    from stdatamodels.jwst.datamodels import SuperBiasModel

    model = SuperBiasModel(data=bias, err=np.ones(bias.shape, dtype=np.float32),
                           dq=np.zeros(bias.shape, dtype=np.uint32), strict_validation=True)
    model.dq_def = dq_def(["DO_NOT_USE", "UNRELIABLE_BIAS"])
    return model


def identity_linearity(shape: tuple[int, int], ncoeffs: int = 5):
    from stdatamodels.jwst.datamodels import LinearityModel

    coeffs = np.zeros((ncoeffs, *shape), dtype=np.float32)
    coeffs[1] = 1.0
    model = LinearityModel(coeffs=coeffs, dq=np.zeros(shape, dtype=np.uint32),
                           strict_validation=True)
    model.dq_def = dq_def(["DO_NOT_USE", "NO_LIN_CORR"])
    return model


def constant_gain(shape: tuple[int, int], gain: float):
    from stdatamodels.jwst.datamodels import GainModel

    return GainModel(data=np.full(shape, gain, dtype=np.float32), strict_validation=True)


def constant_readnoise(shape: tuple[int, int], readnoise: float):
    from stdatamodels.jwst.datamodels import ReadnoiseModel

    return ReadnoiseModel(data=np.full(shape, readnoise, dtype=np.float32),
                          strict_validation=True)


def identity_ipc():
    """An IPC kernel that changes nothing: the simulations have no inter-pixel capacitance."""
    from stdatamodels.jwst.datamodels import IPCModel

    kernel = np.zeros((3, 3), dtype=np.float32)
    kernel[1, 1] = 1.0
    return IPCModel(data=kernel, strict_validation=True)


def pixel_area_sr(pixel_scale: float) -> float:
    """The solid angle (sr) of a square pixel `pixel_scale` arcsec on a side."""
    return (pixel_scale / 3600.0 * math.pi / 180.0) ** 2


def linear_distortion(
    centre: tuple[float, float],
    scale: float,
    v2v3_ref: tuple[float, float],
    v3_idl_yangle: float,
    vparity: int,
):
    """DISTORTION model of a linear SIAF mapping: 0-based science pixel -> ideal -> V2/V3 (arcsec).

    `centre`: the 0-based pixel at the aperture's reference point (V2/V3 `v2v3_ref`).
    """
    from astropy.modeling import models
    from stdatamodels.jwst.datamodels import DistortionModel

    a = math.radians(v3_idl_yangle)
    to_ideal = (models.Shift(-centre[0]) & models.Shift(-centre[1])) | (
        models.Scale(scale) & models.Scale(scale)
    )
    to_v2v3 = models.AffineTransformation2D(
        matrix=[
            [vparity * math.cos(a), math.sin(a)],
            [-vparity * math.sin(a), math.cos(a)],
        ],
        translation=list(v2v3_ref),
    )
    return DistortionModel(
        model=to_ideal | to_v2v3, input_units="pixel", output_units="arcsec", strict_validation=True
    )


class TreeReference:
    """A reference written from a plain tree rather than a datamodel; subclasses
    validate and save it (what `save_reference` needs)."""

    def __init__(self, tree: dict):
        self.tree = tree

    def close(self) -> None:
        pass


# How each type is written, when not FITS.
_EXTENSIONS = {"distortion": ".asdf", "filteroffset": ".asdf", "abvegaoffset": ".asdf",
               "extract1d": ".json"}


def extension(reftype: str) -> str:
    """The file extension of a reference type: parameter references are ASDF."""
    return ".asdf" if reftype.startswith("pars-") else _EXTENSIONS.get(reftype, ".fits")


def builder_for(builders: dict, reftype: str, instrument: str = ""):
    """(builder, file extension) of `reftype` in `builders`, or a ValueError naming the known types."""
    try:
        return builders[reftype], extension(reftype)
    except KeyError:
        what = f"{instrument} " if instrument else ""
        raise ValueError(
            f"no synthetic {what}{reftype!r} reference; one of {sorted(builders)}"
        ) from None


def save_reference(model, path: Path) -> Path:
    model.validate()
    model.save(path)
    model.close()
    return path
