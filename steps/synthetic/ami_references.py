"""Synthetic CRDS references for the NIRISS AMI visit of `ami`.

They describe the detector and optics `ami.simulate_ami` simulates:

* detector1 (NIRISS asks what NIRCam does): MASK (the reference rows),
  SATURATION, SUPERBIAS (the bias map), LINEARITY and IPC (identities), DARK
  (the constant dark rate), GAIN, READNOISE.
* image2: DISTORTION (the linear SUB80 mapping of `ami.pixel_to_v2v3`),
  FILTEROFFSET (none), FLAT (the simulated response), PHOTOM and AREA.
* ami3 (ami_analyze): THROUGHPUT, the filter curve the interferogram was
  summed over (`ami.throughput_curve`, wavelengths in Angstrom as jwst
  reads them), and NRM, the mask: its hole centres, hole size, the pupil
  diameters and the pixelated pupil (`ami.pupil_mask`) that bp_fix
  transforms to find where the interferogram has no power.

All are SUB80-sized or smaller: a full set is a few MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import ami
from calstream.steps.synthetic.ami import AmiSpec
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

DETECTOR1_TYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise",
                   "ipc")
IMAGE2_TYPES = ("distortion", "filteroffset", "flat", "photom", "area")
AMI3_TYPES = ("throughput", "nrm")
ALL_TYPES = DETECTOR1_TYPES + IMAGE2_TYPES + AMI3_TYPES
PHOTMJSR = 1.0


def _stamp(model, reftype: str, description: str, *, subarray: bool = True) -> None:
    stamp_reference(model, "NIRISS", reftype, description, detector=ami.DETECTOR,
                    subarray=ami.SUB80 if subarray else None)


def _shape() -> tuple[int, int]:
    return ami.SUB80.ysize, ami.SUB80.xsize


def _zeros_dq():
    return np.zeros(_shape(), dtype=np.uint32)


def _mask(spec):
    model = refpix_mask(ami.reference_pixel_mask())
    _stamp(model, "mask", "Synthetic NIRISS mask: flags the SUB80 reference rows only")
    return model


def _saturation(spec):
    model = constant_saturation(_shape(), spec.saturation)
    _stamp(model, "saturation", "Synthetic NIRISS saturation levels (raw DN)")
    return model


def _superbias(spec):
    model = bias_superbias(ami.detector_bias(spec))
    _stamp(model, "superbias", "Synthetic NIRISS superbias: the simulated bias map")
    return model


def _linearity(spec):
    model = identity_linearity(_shape(), ncoeffs=2)
    _stamp(model, "linearity", "Synthetic NIRISS linearity: identity (data are linear)")
    return model


def _dark(spec):
    from stdatamodels.jwst.datamodels import DarkModel

    # One frame per group (NISRAPID), as many as the spec reads.
    nframes = spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap
    ramp = spec.dark_rate * ami.SUB80.frame_time * np.arange(1, nframes + 1, dtype=np.float32)
    data = np.broadcast_to(ramp[:, None, None], (nframes, *_shape())).astype(np.float32)
    data[:, ami.reference_pixel_mask()] = 0.0
    model = DarkModel(data=data, err=np.full(data.shape, 0.01, dtype=np.float32),
                      dq=_zeros_dq(), strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "UNRELIABLE_DARK"])
    _stamp(model, "dark", "Synthetic NIRISS dark: constant dark rate")
    e = model.meta.exposure
    e.readpatt = "NISRAPID"
    e.nframes = 1
    e.groupgap = 0
    e.ngroups = nframes
    e.nints = 1
    e.noutputs = ami.SUB80.noutputs
    return model


def _gain(spec):
    model = constant_gain(_shape(), spec.gain)
    _stamp(model, "gain", f"Synthetic NIRISS gain: {spec.gain} e-/DN")
    return model


def _readnoise(spec):
    model = constant_readnoise(_shape(), spec.readnoise)
    _stamp(model, "readnoise", f"Synthetic NIRISS CDS read noise: {spec.readnoise} DN")
    return model


def _ipc(spec):
    model = identity_ipc()
    _stamp(model, "ipc", "Synthetic NIRISS IPC kernel: identity (none simulated)", subarray=False)
    return model


def _distortion(spec):
    # jwst's NIRISS imaging WCS prepends the subarray offset: the model is full-frame.
    centre = (ami.SUB80.xstart - 1 + ami.XREF - 1, ami.SUB80.ystart - 1 + ami.YREF - 1)
    model = linear_distortion(centre, ami.PIXEL_SCALE, (ami.V2_REF, ami.V3_REF),
                              ami.V3_IDL_YANGLE, ami.VIDL_PARITY)
    _stamp(model, "distortion", "Synthetic NIRISS distortion: linear", subarray=False)
    model.meta.exposure.p_exptype = "NIS_IMAGE|NIS_AMI|NIS_TACQ|NIS_TACONFIRM|NIS_FOCUS|"
    return model


def _filteroffset(spec):
    from stdatamodels.jwst.datamodels import FilteroffsetModel

    filters = [{"filter": ami.FILTER, "pupil": ami.PUPIL, "column_offset": 0.0,
                "row_offset": 0.0}]
    model = FilteroffsetModel(filters=filters, instrument="NIRISS", strict_validation=True)
    _stamp(model, "filteroffset", "Synthetic NIRISS filter offsets: none", subarray=False)
    return model


def _flat(spec):
    from stdatamodels.jwst.datamodels import FlatModel

    model = FlatModel(data=ami.detector_flat(spec), err=np.full(_shape(), 0.001, np.float32),
                      dq=_zeros_dq(), strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "NO_FLAT_FIELD"])
    _stamp(model, "flat", "Synthetic NIRISS AMI flat: the simulated pixel response")
    model.meta.instrument.filter = ami.FILTER
    model.meta.instrument.pupil = ami.PUPIL
    return model


def _pixel_area_sr() -> float:
    return (ami.PIXEL_SCALE / 3600.0 * math.pi / 180.0) ** 2


def _photom(spec):
    from stdatamodels.jwst.datamodels import NisImgPhotomModel

    table = np.array([(ami.FILTER, ami.PUPIL, PHOTMJSR, 0.01 * PHOTMJSR)],
                     dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "<f4"),
                            ("uncertainty", "<f4")])
    model = NisImgPhotomModel(phot_table=table, strict_validation=True)
    _stamp(model, "photom", "Synthetic NIRISS photometric calibration", subarray=False)
    model.meta.photometry.pixelarea_steradians = _pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = ami.PIXEL_SCALE**2
    return model


def _area(spec):
    from stdatamodels.jwst.datamodels import PixelAreaModel

    # photom slices the map at SUB80's full-frame position: cover up to its far corner.
    sub = ami.SUB80
    shape = (sub.ystart - 1 + sub.ysize, sub.xstart - 1 + sub.xsize)
    model = PixelAreaModel(data=np.ones(shape, dtype=np.float32), strict_validation=True)
    _stamp(model, "area", "Synthetic NIRISS pixel area map: all ones", subarray=False)
    model.meta.instrument.filter = ami.FILTER
    model.meta.instrument.pupil = ami.PUPIL
    model.meta.photometry.pixelarea_steradians = _pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = ami.PIXEL_SCALE**2
    return model


def _throughput(spec):
    from stdatamodels.jwst.datamodels import ThroughputModel

    wave, throughput = ami.throughput_curve()
    table = np.rec.array(list(zip(wave * 1e10, throughput, strict=True)),
                         formats="f4,f4", names="wavelength,throughput")
    model = ThroughputModel(filter_table=table, strict_validation=True)
    _stamp(model, "throughput", f"Synthetic NIRISS {ami.FILTER} throughput: flat in band",
           subarray=False)
    model.meta.instrument.filter = ami.FILTER
    return model


def _nrm(spec):
    from stdatamodels.jwst.datamodels import NRMModel

    model = NRMModel(nrm=ami.pupil_mask(), strict_validation=True)
    model.flat_to_flat = ami.HOLE_F2F
    model.diameter = ami.PUPIL_DIAMETER
    model.pupil_circumscribed = ami.PUPIL_CIRCUMSCRIBED
    for k, (x, y) in enumerate(ami.HOLES, start=1):
        setattr(model, f"x_a{k}", x)
        setattr(model, f"y_a{k}", y)
    _stamp(model, "nrm", "Synthetic NIRISS non-redundant mask", subarray=False)
    model.meta.exposure.type = "NIS_AMI"
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
    "throughput": (_throughput, ".fits"),
    "nrm": (_nrm, ".fits"),
}


def write_ami_reference_files(ref_dir: str | Path, spec: AmiSpec | None = None, *,
                              reftypes: Iterable[str] = ALL_TYPES) -> dict[str, list[Path]]:
    """Write the NIRISS AMI references; return {reftype: [paths]} for `build_crds_cache`."""
    spec = spec or AmiSpec()
    spec.validate()
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for reftype in reftypes:
        build, ext = builder_for(_BUILDERS, reftype, "NIRISS")
        path = out / f"niriss_{ami.DETECTOR.lower()}_sub80_{reftype}{ext}"
        written[reftype] = [save_reference(build(spec), path)]
    return written
