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

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import ami
from calstream.steps.synthetic.ami import AmiSpec
from calstream.steps.synthetic.detector_references import (
    DETECTOR1_TYPES,
    DetectorReferences,
    write_mode_references,
)
from calstream.steps.synthetic.focal_plane import Subarray

IMAGE2_TYPES = ("distortion", "filteroffset", "flat", "photom", "area")
AMI3_TYPES = ("throughput", "nrm")
ALL_TYPES = DETECTOR1_TYPES + IMAGE2_TYPES + AMI3_TYPES
PHOTMJSR = 1.0
_OPTICS = {"instrument.filter": ami.FILTER, "instrument.pupil": ami.PUPIL}


def nis_detector(spec, sub: Subarray) -> DetectorReferences:
    """The NIS detector's references, read in the corner subarray ``sub``
    (SUB80 here, SUB128 for `wfss_references`)."""
    return DetectorReferences(
        "NIRISS", ami.DETECTOR, sub, ami.reference_pixel_mask(sub),
        lambda: ami.detector_bias(spec, sub), label="NIRISS ",
        mask_description=f"Synthetic NIRISS mask: flags the {sub.name} reference rows only",
        linearity_coeffs=2, dark_readpatt="NISRAPID")


def _detector(spec: AmiSpec) -> DetectorReferences:
    return nis_detector(spec, ami.SUB80)


def _distortion(spec):
    # jwst's NIRISS imaging WCS prepends the subarray offset: the model is full-frame.
    centre = (ami.SUB80.xstart - 1 + ami.XREF - 1, ami.SUB80.ystart - 1 + ami.YREF - 1)
    return _detector(spec).distortion(
        centre, ami.PIXEL_SCALE, ami.SUB80_FRAME, "Synthetic NIRISS distortion: linear",
        meta={"exposure.p_exptype": "NIS_IMAGE|NIS_AMI|NIS_TACQ|NIS_TACONFIRM|NIS_FOCUS|"})


def _filteroffset(spec):
    return _detector(spec).filteroffset(
        [{"filter": ami.FILTER, "pupil": ami.PUPIL, "column_offset": 0.0, "row_offset": 0.0}],
        "Synthetic NIRISS filter offsets: none")


def _flat(spec):
    return _detector(spec).flat(ami.detector_flat(spec),
                                "Synthetic NIRISS AMI flat: the simulated pixel response",
                                flag_reference_pixels=False, meta=_OPTICS)


def _photom(spec):
    from stdatamodels.jwst.datamodels import NisImgPhotomModel

    return _detector(spec).photom(NisImgPhotomModel, (ami.FILTER, ami.PUPIL), PHOTMJSR,
                                  ami.PIXEL_SCALE, "Synthetic NIRISS photometric calibration")


def _area(spec):
    return _detector(spec).area_to_subarray("Synthetic NIRISS pixel area map: all ones",
                                            pixel_scale=ami.PIXEL_SCALE, meta=_OPTICS)


def _throughput(spec):
    from stdatamodels.jwst.datamodels import ThroughputModel

    wave, throughput = ami.throughput_curve()
    table = np.rec.array(list(zip(wave * 1e10, throughput, strict=True)),
                         formats="f4,f4", names="wavelength,throughput")
    model = ThroughputModel(filter_table=table, strict_validation=True)
    return _detector(spec).stamp(model, "throughput",
                                 f"Synthetic NIRISS {ami.FILTER} throughput: flat in band",
                                 subarray=False, meta={"instrument.filter": ami.FILTER})


def _nrm(spec):
    from stdatamodels.jwst.datamodels import NRMModel

    model = NRMModel(nrm=ami.pupil_mask(), strict_validation=True)
    model.flat_to_flat = ami.HOLE_F2F
    model.diameter = ami.PUPIL_DIAMETER
    model.pupil_circumscribed = ami.PUPIL_CIRCUMSCRIBED
    for k, (x, y) in enumerate(ami.HOLES, start=1):
        setattr(model, f"x_a{k}", x)
        setattr(model, f"y_a{k}", y)
    return _detector(spec).stamp(model, "nrm", "Synthetic NIRISS non-redundant mask",
                                 subarray=False, meta={"exposure.type": "NIS_AMI"})


def write_ami_reference_files(ref_dir: str | Path, spec: AmiSpec | None = None, *,
                              reftypes: Iterable[str] = ALL_TYPES) -> dict[str, list[Path]]:
    """Write the NIRISS AMI references; return {reftype: [paths]} for `build_crds_cache`."""
    spec = spec or AmiSpec()
    return write_mode_references(
        ref_dir, spec, _detector(spec),
        {"distortion": _distortion, "filteroffset": _filteroffset, "flat": _flat,
         "photom": _photom, "area": _area, "throughput": _throughput, "nrm": _nrm},
        reftypes, what="NIRISS", stem=f"niriss_{ami.DETECTOR.lower()}_sub80")
