"""Synthetic CRDS references for the NIRCam coronagraphy of `coronagraphy`.

They describe the detector and optics `coronagraphy.simulate_coronagraphy`
simulates: detector1's MASK (reference pixels), SATURATION, SUPERBIAS (the
bias map), LINEARITY and IPC (identities), DARK, GAIN and READNOISE;
image2's DISTORTION (the linear long-wave A mapping), FILTEROFFSET (none),
FLAT (the simulated response), PHOTOM and AREA; and coron3's PSFMASK, the
occulter's transmission, which align_refs uses to weight its fit.

Every file is stamped NRCALONG: the imaging modes' shared tables (PHOTOM)
are valid for any detector, and a context holds one file per selection, so
the coronagraphic ones must be more specific, not another "any".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import coronagraphy as coron
from calstream.steps.synthetic.coronagraphy import CoronSpec
from calstream.steps.synthetic.references import (
    _dq_def,
    bias_superbias,
    builder_for,
    constant_gain,
    constant_readnoise,
    constant_saturation,
    identity_ipc,
    identity_linearity,
    linear_distortion,
    refpix_mask,
    save_reference,
    stamp_reference,
)

DETECTOR1_TYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain",
                   "readnoise", "ipc")
IMAGE2_TYPES = ("distortion", "filteroffset", "flat", "photom", "area")
CORON3_TYPES = ("psfmask",)
ALL_TYPES = DETECTOR1_TYPES + IMAGE2_TYPES + CORON3_TYPES


def _stamp(model, reftype: str, description: str, *, subarray: bool = True) -> None:
    stamp_reference(model, "NIRCAM", reftype, description, detector=coron.DETECTOR,
                    subarray=coron.SUBARRAY if subarray else None)


def _shape() -> tuple[int, int]:
    return coron.SUBARRAY.ysize, coron.SUBARRAY.xsize


def _zeros_dq():
    return np.zeros(_shape(), dtype=np.uint32)


def _optics(model) -> None:
    i = model.meta.instrument
    i.filter = coron.FILTER
    i.pupil = coron.PUPIL


def _mask(spec):
    model = refpix_mask(coron.reference_pixel_mask())
    _stamp(model, "mask", "Synthetic bad pixel mask: flags reference pixels only")
    return model


def _saturation(spec):
    model = constant_saturation(_shape(), spec.saturation)
    _stamp(model, "saturation", "Synthetic saturation levels (raw DN)")
    return model


def _superbias(spec):
    model = bias_superbias(coron.detector_bias(spec))
    _stamp(model, "superbias", "Synthetic superbias: the simulated bias map")
    return model


def _linearity(spec):
    model = identity_linearity(_shape(), ncoeffs=5)
    _stamp(model, "linearity", "Synthetic linearity: identity (data are linear)")
    return model


def _dark(spec):
    from stdatamodels.jwst.datamodels import DarkModel

    tframe = coron.SUBARRAY.frame_time
    # One frame per group: the dark step averages it to the science readout.
    frames = spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap
    ramp = spec.dark_rate * tframe * np.arange(1, frames + 1, dtype=np.float32)
    data = np.broadcast_to(ramp[:, None, None], (frames, *_shape())).astype(np.float32)
    data[:, coron.reference_pixel_mask()] = 0.0
    model = DarkModel(data=data, err=np.full(data.shape, 0.01, dtype=np.float32),
                      dq=_zeros_dq(), strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "UNRELIABLE_DARK"])
    _stamp(model, "dark", "Synthetic dark: constant dark rate")
    e = model.meta.exposure
    e.readpatt = "RAPID"
    e.nframes = 1
    e.groupgap = 0
    e.ngroups = frames
    e.nints = 1
    e.noutputs = coron.SUBARRAY.noutputs
    return model


def _gain(spec):
    model = constant_gain(_shape(), spec.gain)
    _stamp(model, "gain", f"Synthetic gain: {spec.gain} e-/DN")
    return model


def _readnoise(spec):
    model = constant_readnoise(_shape(), spec.readnoise)
    _stamp(model, "readnoise", f"Synthetic CDS read noise: {spec.readnoise} DN")
    return model


def _ipc(spec):
    model = identity_ipc()
    _stamp(model, "ipc", "Synthetic IPC kernel: identity (none simulated)", subarray=False)
    return model


def _distortion(spec):
    centre = (coron.FULL_SIZE + 1) / 2 - 1
    model = linear_distortion((centre, centre), coron.PIXEL_SCALE, (coron.V2_REF, coron.V3_REF),
                              coron.V3_IDL_YANGLE, coron.VIDL_PARITY)
    _stamp(model, "distortion", "Synthetic distortion: SIAF linear model", subarray=False)
    model.meta.instrument.module = "A"
    model.meta.instrument.channel = "LONG"
    model.meta.instrument.p_pupil = "ANY|"
    model.meta.exposure.p_exptype = f"{coron.EXP_TYPE}|"
    return model


def _filteroffset(spec):
    from stdatamodels.jwst.datamodels import FilteroffsetModel

    model = FilteroffsetModel(
        filters=[{"filter": coron.FILTER, "pupil": coron.PUPIL,
                  "column_offset": 0.0, "row_offset": 0.0}],
        instrument="NIRCAM", strict_validation=True)
    _stamp(model, "filteroffset", "Synthetic filter offsets: none", subarray=False)
    model.meta.instrument.module = "A"
    model.meta.instrument.channel = "LONG"
    return model


def _flat(spec):
    from stdatamodels.jwst.datamodels import FlatModel

    model = FlatModel(
        data=coron.detector_flat(spec),
        err=np.full(_shape(), 0.001, dtype=np.float32),
        dq=np.where(coron.reference_pixel_mask(), 1, 0).astype(np.uint32),
        strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "NO_FLAT_FIELD"])
    _stamp(model, "flat", "Synthetic flat: the simulated pixel response")
    _optics(model)
    return model


def _pixel_area_sr() -> float:
    return (coron.PIXEL_SCALE / 3600.0 * math.pi / 180.0) ** 2


def _photom(spec):
    from stdatamodels.jwst.datamodels import NrcImgPhotomModel

    table = np.array(
        [(coron.FILTER, coron.PUPIL, coron.PHOTMJSR, 0.01 * coron.PHOTMJSR)],
        dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "<f4"), ("uncertainty", "<f4")])
    model = NrcImgPhotomModel(phot_table=table, strict_validation=True)
    _stamp(model, "photom", "Synthetic coronagraphic photometric calibration", subarray=False)
    model.meta.photometry.pixelarea_steradians = _pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = coron.PIXEL_SCALE**2
    return model


def _area(spec):
    from stdatamodels.jwst.datamodels import PixelAreaModel

    # photom cuts the science subarray out of the map at its full-frame place.
    sub = coron.SUBARRAY
    shape = (sub.ystart - 1 + sub.ysize, sub.xstart - 1 + sub.xsize)
    model = PixelAreaModel(data=np.ones(shape, dtype=np.float32), strict_validation=True)
    _stamp(model, "area", "Synthetic pixel area map: no distortion, all ones", subarray=False)
    _optics(model)
    model.meta.photometry.pixelarea_steradians = _pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = coron.PIXEL_SCALE**2
    return model


def _psfmask(spec):
    from stdatamodels.jwst.datamodels import PsfMaskModel

    model = PsfMaskModel(data=coron.occulter_transmission(spec), strict_validation=True)
    _stamp(model, "psfmask", f"Synthetic {coron.CORONAGRAPH} transmission")
    _optics(model)
    model.meta.instrument.coronagraph = coron.CORONAGRAPH
    model.meta.exposure.type = coron.EXP_TYPE
    return model


_BUILDERS = {
    "mask": (_mask, ".fits"),
    "saturation": (_saturation, ".fits"),
    "superbias": (_superbias, ".fits"),
    "linearity": (_linearity, ".fits"),
    "dark": (_dark, ".fits"),
    "gain": (_gain, ".fits"),
    "readnoise": (_readnoise, ".fits"),
    "ipc": (_ipc, ".fits"),
    "distortion": (_distortion, ".asdf"),
    "filteroffset": (_filteroffset, ".asdf"),
    "flat": (_flat, ".fits"),
    "photom": (_photom, ".fits"),
    "area": (_area, ".fits"),
    "psfmask": (_psfmask, ".fits"),
}


def write_coron_reference_files(ref_dir: str | Path, spec: CoronSpec, *,
                                reftypes=ALL_TYPES) -> dict[str, list[Path]]:
    """Write the references of `spec`; return {reftype: [paths]} for `build_crds_cache`."""
    spec.validate()
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for reftype in reftypes:
        build, ext = builder_for(_BUILDERS, reftype, "NIRCam coronagraphy")
        path = out / f"nircam_{coron.DETECTOR.lower()}_{coron.SUBARRAY.name.lower()}_{reftype}{ext}"
        written[reftype] = [save_reference(build(spec), path)]
    return written
