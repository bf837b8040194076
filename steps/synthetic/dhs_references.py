"""Synthetic CRDS references for the NIRCam DHS exposure of `dhs`.

What each stage asked CRDS for (jwst 3.0), and what is written:

* detector1: MASK, SATURATION, SUPERBIAS, LINEARITY, DARK, GAIN, READNOISE,
  IPC, all NRCA1 SUB41STRIPE1_DHS. Each is "cut from the full frame" the way
  the stripe readout reads: its rows are the full-frame rows `dhs.stripe_rows`
  names (the superbias is NRCA1's full-frame bias map at those rows), and it
  carries the file's own SUBSTRT/SUBSIZE, so jwst's `ref_matches_sci` takes
  it as it is (a full-frame one would be cut by `stripe_utils.stripe_read`).
* spec2: DISTORTION (the linear `dhs.FRAME` mapping) and FILTEROFFSET (none),
  which the grism WCS starts from; REGIONS, a full-frame map labelling the
  stripe's rows `dhs.STRIPE_ID` (jwst reads it through the stripe readout to
  find where the stripe's rows came from); SPECWCS, a NIRCAMGrismModel with
  the DHS layout (one dispersion per stripe and field point: `stripes`,
  `fieldpoints`): the first order of `dhs.TRACE_X` / `dhs.WAVE_RANGE`;
  WAVELENGTHRANGE (NRC_TSGRISM, DHS rows: order, field point, filter, range).

Everything else is 'N/A' in the context, so jwst skips flat_field and photom
(CRDS has no FLAT or PHOTOM for them here) and extract_1d uses its defaults.
The types that select on a subarray are stamped SUB41STRIPE1_DHS; the IPC
kernel, which has no subarray, a later USEAFTER than the imaging modes' NRCA1
one (the same identity kernel, whichever CRDS picks).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import dhs
from calstream.steps.synthetic.detector_references import (
    DETECTOR1_TYPES,
    DetectorReferences,
    set_meta,
    write_mode_references,
)
from calstream.steps.synthetic.dhs import DhsSpec
from calstream.steps.synthetic.nircam_detectors import FULL_SIZE
from calstream.steps.synthetic.reference_models import stamp_reference

SPEC2_TYPES = ("distortion", "filteroffset", "regions", "specwcs", "wavelengthrange")
ALL_TYPES = DETECTOR1_TYPES + SPEC2_TYPES
_NRCA1 = {"instrument.channel": "SHORT", "instrument.module": "A"}
_TSGRISM = {"exposure.type": "NRC_TSGRISM", **_NRCA1}


def _detector(spec: DhsSpec) -> DetectorReferences:
    return DetectorReferences(
        "NIRCAM", dhs.DETECTOR, dhs.SUB41, dhs.reference_pixel_mask(),
        lambda: dhs.detector_bias(spec), label="NIRCam DHS ",
        mask_description="Synthetic NIRCam DHS mask: flags the stripe readout's reference pixels")


def _named(model, *, subarray: bool = True):
    """Select the file for the DHS exposure only: by subarray name where the
    type has the keyword (no corner or size: these are not subarray cut-outs),
    else by a later USEAFTER."""
    if subarray and "subarray" in model.schema["properties"]["meta"]["properties"]:
        model.meta.subarray.name = dhs.SUB41.name
    else:
        model.meta.useafter = "2022-01-03T00:00:00"
    return model


def _stamp(model, reftype: str, description: str, meta=None):
    stamp_reference(model, "NIRCAM", reftype, description, detector=dhs.DETECTOR)
    set_meta(model, meta or {})
    return _named(model)


def _ipc(spec):
    return _named(_detector(spec).build("ipc", spec), subarray=False)


def _distortion(spec):
    return _named(_detector(spec).distortion(
        (dhs.XREF - 1, dhs.YREF - 1), dhs.PIXEL_SCALE, dhs.FRAME,
        "Synthetic NIRCam DHS distortion: linear",
        meta={"exposure.p_exptype": "NRC_TSGRISM|", **_NRCA1,
              "instrument.p_pupil": f"{dhs.PUPIL}|"}))


def _filteroffset(spec):
    rows = [{"filter": dhs.FILTER, "pupil": dhs.PUPIL, "column_offset": 0.0, "row_offset": 0.0}]
    return _named(_detector(spec).filteroffset(rows, "Synthetic NIRCam DHS filter offsets: none",
                                                 meta=_NRCA1))


def _regions(spec):
    from stdatamodels.jwst.datamodels import RegionsModel

    regions = np.zeros((FULL_SIZE, FULL_SIZE), dtype=np.uint8)
    first = dhs.stripe_first_row()
    regions[first : first + dhs.MULTISTRIPE["multistripe_reads2"]] = dhs.STRIPE_ID
    model = RegionsModel(regions=regions, strict_validation=True)
    return _stamp(model, "regions", "Synthetic NIRCam DHS regions: the stripe's full-frame rows",
                  meta={**_TSGRISM, "instrument.filter": dhs.FILTER, "instrument.pupil": dhs.PUPIL})


def _specwcs(spec):
    from astropy.modeling.models import Polynomial1D
    from stdatamodels.jwst.datamodels import NIRCAMGrismModel

    (l0, l1), (x0, x1) = dhs.WAVE_RANGE, dhs.TRACE_X
    y = float(dhs.stripe_first_row() + dhs.TRACE_ROW)
    # One entry per (stripe, field point), each [order][model] as jwst's DHS file.
    model = NIRCAMGrismModel(
        displ=[[[Polynomial1D(1, c0=l0, c1=l1 - l0)]]],
        dispx=[[[Polynomial1D(1, c0=x0, c1=x1 - x0)]]],
        dispy=[[[Polynomial1D(1, c0=y, c1=0.0)]]],
        invdispl=[[[]]], invdispx=[[[]]], invdispy=[[[]]],
        orders=[1], stripes=[dhs.STRIPE_ID])
    return _WithFieldpoints(_stamp(
        model, "specwcs", "Synthetic NIRCam DHS first-order trace, one stripe",
        meta={**_TSGRISM, "input_units": "micron", "output_units": "micron",
              "instrument.filter": dhs.FILTER, "instrument.pupil": dhs.PUPIL,
              "reftype": "specwcs"}))


def _wavelengthrange(spec):
    import astropy.units as u
    from stdatamodels.jwst.datamodels import WavelengthrangeModel

    lo, hi = dhs.WAVE_RANGE
    model = WavelengthrangeModel(
        wrange_selector=[dhs.FILTER], wrange=[[1, dhs.FIELDPOINT, dhs.FILTER, lo, hi]],
        order=[1], extract_orders=[[dhs.FILTER, [1]]], wunits=u.micron)
    return _stamp(model, "wavelengthrange", "Synthetic NIRCam DHS wavelength range: first order",
                  meta={**_TSGRISM, "reftype": "wavelengthrange"})


_BUILDERS = {"ipc": _ipc, "distortion": _distortion, "filteroffset": _filteroffset,
             "regions": _regions, "specwcs": _specwcs, "wavelengthrange": _wavelengthrange}
_ASDF = ("regions", "specwcs", "wavelengthrange")


def write_dhs_reference_files(ref_dir: str | Path, spec: DhsSpec | None = None, *,
                              reftypes: Iterable[str] = ALL_TYPES) -> dict[str, list[Path]]:
    """Write the NIRCam DHS references; return {reftype: [paths]} for `build_crds_cache`."""
    spec = spec or DhsSpec()
    return write_mode_references(ref_dir, spec, _detector(spec), _BUILDERS, reftypes,
                                 what="NIRCam DHS", stem=f"nircam_{dhs.DETECTOR.lower()}_dhs",
                                 extensions=dict.fromkeys(_ASDF, ".asdf"))


class _WithFieldpoints:
    """The SPECWCS model, saved with FIELDPOINTS written into its ASDF tree
    past stdatamodels.

    jwst 3.0 (`assign_wcs.nircam.dhs`) keeps the dispersions whose field point
    (a long-wave filter name) is in the exposure's PPS aperture name, as its
    own DHS test reference (jwst/assign_wcs/tests/data/nircam_nrca1_specwcs.asdf)
    holds them: strings. stdatamodels' schema (specwcs_nircam_grism) types
    them as numbers, so the model refuses to set them; reading only warns.
    """

    def __init__(self, model):
        self.model = model

    def validate(self) -> None:
        self.model.validate()

    def save(self, path: Path) -> None:
        import asdf

        self.model.save(path)
        with asdf.open(path, mode="rw", lazy_load=False, memmap=False) as af:
            af.tree["fieldpoints"] = [dhs.FIELDPOINT]
            af.update()

    def close(self) -> None:
        self.model.close()
