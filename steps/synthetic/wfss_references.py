"""Synthetic CRDS references for the NIRISS WFSS visit of `wfss`.

What each stage asked CRDS for (jwst 3.0), and what is written:

* detector1 (as for AMI): MASK, SATURATION, SUPERBIAS, LINEARITY, DARK, GAIN,
  READNOISE, IPC.
* image2 of the direct image: DISTORTION (the linear SUB128 mapping of
  `wfss.pixel_to_v2v3`), FILTEROFFSET (none), FLAT, PHOTOM (NisImgPhotom), AREA.
* image3 (source_catalog): APCORR (NisImgApcorr, a Gaussian PSF's
  encircled energy) and ABVEGAOFFSET.
* spec2 of the grism image: DISTORTION and FILTEROFFSET again (the grism WCS
  starts from the imaging one), SPECWCS (the first-order dispersion
  `wfss.wavelength_of` / `wfss.trace_offset`), WAVELENGTHRANGE (order 1 over
  `wfss.WAVE_RANGE` for F150W), BKG (the sky's shape: flat), FLAT and PHOTOM
  (NisWfssPhotom, per wavelength, flat response).

The direct image and the grism image share the detector and subarray but not
their FLAT, PHOTOM and APCORR, so those carry EXP_TYPE (`crds_cache` then
matches on it). Every file is stamped SUB128 where its type has the keywords,
so none collides with the AMI visit's references of the same detector; the
AREA map, which has none, comes as a pair by EXP_TYPE too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from calstream.steps.synthetic import wfss
from calstream.steps.synthetic.ami_references import nis_detector
from calstream.steps.synthetic.detector_references import (
    DETECTOR1_TYPES,
    DetectorReferences,
    set_meta,
)
from calstream.steps.synthetic.metadata import set_subarray
from calstream.steps.synthetic.reference_models import (
    builder_for,
    extension,
    pixel_area_sr,
    save_reference,
)
from calstream.steps.synthetic.wfss import WfssSpec

IMAGE2_TYPES = ("distortion", "filteroffset", "flat", "photom", "area")
IMAGE3_TYPES = ("apcorr", "abvegaoffset")
SPEC2_TYPES = ("specwcs", "wavelengthrange", "bkg")
ALL_TYPES = DETECTOR1_TYPES + IMAGE2_TYPES + IMAGE3_TYPES + SPEC2_TYPES
PHOTMJSR = 1.0
ABVEGA = 1.0
_DIRECT = {"exposure.type": "NIS_IMAGE"}
_GRISM = {"exposure.type": "NIS_WFSS"}


def _detector(spec: WfssSpec) -> DetectorReferences:
    return nis_detector(spec, wfss.SUB128)


def _in_sub128(model):
    """Select the file for this visit's exposures only, never the AMI visit's
    (same detector): by subarray where the type has the keywords, else (the
    IPC kernel, ABVEGAOFFSET) by a later USEAFTER -- the same content,
    whichever CRDS picks. (AREA has neither: it comes in a pair, by EXP_TYPE.)"""
    if "subarray" in model.schema["properties"]["meta"]["properties"]:
        set_subarray(model.meta.subarray, wfss.SUB128)
    elif "type" not in model.meta.instance.get("exposure", {}):
        model.meta.useafter = "2022-01-02T00:00:00"
    return model


def _stamp(spec, model, reftype: str, description: str, meta=None):
    return _in_sub128(_detector(spec).stamp(model, reftype, description, subarray=False,
                                            meta=meta))


def _ipc(spec):
    return _in_sub128(_detector(spec).build("ipc", spec))


def _distortion(spec):
    sub = wfss.SUB128
    centre = (sub.xstart - 1 + wfss.XREF - 1, sub.ystart - 1 + wfss.YREF - 1)
    return _in_sub128(_detector(spec).distortion(
        centre, wfss.PIXEL_SCALE, wfss.FRAME, "Synthetic NIRISS distortion: linear",
        meta={"exposure.p_exptype": "NIS_IMAGE|NIS_WFSS|"}))


def _filteroffset(spec):
    rows = [{"filter": f, "pupil": wfss.PUPIL, "column_offset": 0.0, "row_offset": 0.0}
            for f in (wfss.DIRECT_FILTER, wfss.GRISM)]
    return _in_sub128(_detector(spec).filteroffset(rows, "Synthetic NIRISS filter offsets: none"))


def _flats(spec):
    """The same pixel response for both: what the simulation multiplied in."""
    return [_detector(spec).flat(
        wfss.detector_flat(spec), f"Synthetic NIRISS {what} flat: the simulated pixel response",
        flag_reference_pixels=False,
        meta={**kind, "instrument.filter": filt, "instrument.pupil": wfss.PUPIL})
        for what, kind, filt in (("imaging", _DIRECT, wfss.DIRECT_FILTER),
                                 ("WFSS", _GRISM, wfss.GRISM))]


def _photoms(spec):
    from stdatamodels.jwst.datamodels import NisImgPhotomModel, NisWfssPhotomModel

    detector = _detector(spec)
    image = detector.photom(NisImgPhotomModel, (wfss.DIRECT_FILTER, wfss.PUPIL), PHOTMJSR,
                            wfss.PIXEL_SCALE, "Synthetic NIRISS imaging photometric calibration")
    set_meta(image, _DIRECT)
    nelem = 50
    wave = np.zeros(3000, dtype=np.float32)
    wave[:nelem] = np.linspace(*wfss.WAVE_RANGE, nelem)
    response = np.zeros(3000, dtype=np.float32)
    response[:nelem] = 1.0
    table = np.array(
        [(wfss.GRISM, wfss.PUPIL, 1, PHOTMJSR, 0.01 * PHOTMJSR, nelem, wave, response,
          response * 0.01)],
        dtype=[("filter", "S12"), ("pupil", "S15"), ("order", "<i2"), ("photmjsr", "<f4"),
               ("uncertainty", "<f4"), ("nelem", "<i2"), ("wavelength", "<f4", (3000,)),
               ("relresponse", "<f4", (3000,)), ("reluncertainty", "<f4", (3000,))])
    grism = NisWfssPhotomModel(phot_table=table, strict_validation=True)
    _stamp(spec, grism, "photom", "Synthetic NIRISS WFSS photometric calibration: flat",
           meta={**_GRISM, "phot_unit": "MJy / (DN / s) / sr",
                                        "wave_unit": "micron"})
    set_meta(grism, {"photometry.pixelarea_steradians": pixel_area_sr(wfss.PIXEL_SCALE),
                     "photometry.pixelarea_arcsecsq": wfss.PIXEL_SCALE**2})
    return [_in_sub128(image), grism]


def _areas(spec):
    return [_detector(spec).area_to_subarray(
        "Synthetic NIRISS pixel area map: all ones", pixel_scale=wfss.PIXEL_SCALE, meta=kind)
        for kind in (_DIRECT, _GRISM)]


def _apcorr(spec):
    from stdatamodels.jwst.datamodels import NisImgApcorrModel

    fractions = np.arange(0.1, 0.95, 0.1)
    radii = wfss.STAR_SIGMA * np.sqrt(-2.0 * np.log(1.0 - fractions))
    sky_in, sky_out = 4.0 * radii[-1], 6.0 * radii[-1]
    table = np.array(
        [(wfss.DIRECT_FILTER, wfss.PUPIL, f, r, 1.0 / f, sky_in, sky_out)
         for f, r in zip(fractions, radii, strict=True)],
        dtype=[("filter", "S12"), ("pupil", "S15"), ("eefraction", "<f4"), ("radius", "<f4"),
               ("apcorr", "<f4"), ("skyin", "<f4"), ("skyout", "<f4")])
    image = NisImgApcorrModel(apcorr_table=table, strict_validation=True)
    return [_stamp(spec, image, "apcorr", "Synthetic NIRISS aperture corrections",
                   meta=_DIRECT), _wfss_apcorr(spec)]


def _wfss_apcorr(spec):
    """extract_1d's: none needed (1 at every wavelength and aperture size), as the
    box holds the whole simulated cross-dispersion profile."""
    from stdatamodels.jwst.datamodels import NisWfssApcorrModel

    n = 20
    wave = np.zeros(100, dtype=np.float32)
    wave[:n] = np.linspace(*wfss.WAVE_RANGE, n)
    size = np.zeros(100, dtype=np.uint8)
    size[:3] = (5, 11, 21)
    ones = np.zeros((100, 100), dtype=np.float32)
    ones[:3, :n] = 1.0
    table = np.array(
        [(wfss.GRISM, wfss.PUPIL, wave, n, size, 3, ones, ones * 0.0)],
        dtype=[("filter", "S12"), ("pupil", "S15"), ("wavelength", "<f4", (100,)),
               ("nelem_wl", "<i2"), ("size", "u1", (100,)), ("nelem_size", "<i2"),
               ("apcorr", "<f4", (100, 100)), ("apcorr_err", "<f4", (100, 100))])
    model = NisWfssApcorrModel(apcorr_table=table, strict_validation=True)
    model.sizeunit = "pixel"
    return _stamp(spec, model, "apcorr", "Synthetic NIRISS WFSS aperture corrections: none",
                  meta=_GRISM)


def _abvegaoffset(spec):
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ABVegaOffsetModel

    model = ABVegaOffsetModel(strict_validation=True)
    model.abvega_offset = Table({"filter": [wfss.DIRECT_FILTER], "pupil": [wfss.PUPIL],
                                 "abvega_offset": np.full(1, ABVEGA, dtype=np.float32)})
    return _stamp(spec, model, "abvegaoffset", "Synthetic NIRISS AB - Vega offsets")


def _specwcs(spec):
    from astropy.modeling.models import Polynomial1D, Polynomial2D
    from stdatamodels.jwst.datamodels import NIRISSGrismModel

    lo, hi = wfss.WAVE_RANGE
    model = NIRISSGrismModel(
        displ=[Polynomial1D(1, c0=lo, c1=hi - lo)],
        invdispl=[Polynomial1D(1, c0=-lo / (hi - lo), c1=1.0 / (hi - lo))],
        dispx=[[Polynomial2D(1, c0_0=wfss.TRACE_START), Polynomial2D(1, c0_0=wfss.TRACE_LENGTH)]],
        dispy=[[Polynomial2D(1, c0_0=0.0), Polynomial2D(1, c0_0=0.0)]],
        orders=[1], fwcpos_ref=wfss.FWCPOS)
    return _stamp(spec, model, "specwcs", "Synthetic NIRISS GR150C first-order trace",
                                 meta={**_GRISM, "input_units": "pixel", "output_units": "micron",
                                       "instrument.filter": wfss.GRISM,
                                       "instrument.pupil": wfss.PUPIL,
                                       "reftype": "specwcs"})  # its validate wants lower case


def _wavelengthrange(spec):
    import astropy.units as u
    from stdatamodels.jwst.datamodels import WavelengthrangeModel

    lo, hi = wfss.WAVE_RANGE
    model = WavelengthrangeModel(wrange_selector=[wfss.PUPIL], wrange=[[1, wfss.PUPIL, lo, hi]],
                                 order=[1], extract_orders=[[wfss.PUPIL, [1]]], wunits=u.micron)
    return _stamp(spec, model, "wavelengthrange",
                  "Synthetic NIRISS WFSS wavelength range: first order",
                  meta={**_GRISM, "reftype": "wavelengthrange"})


def _bkg(spec):
    from stdatamodels.jwst.datamodels import WfssBkgModel

    shape = (wfss.SUB128.ysize, wfss.SUB128.xsize)
    model = WfssBkgModel(data=np.ones(shape, dtype=np.float32),
                         err=np.full(shape, 0.001, dtype=np.float32),
                         dq=np.zeros(shape, dtype=np.uint32), strict_validation=True)
    return _stamp(spec, model, "bkg", "Synthetic NIRISS WFSS sky: flat", meta={
        **_GRISM, "instrument.filter": wfss.GRISM, "instrument.pupil": wfss.PUPIL})


_BUILDERS = {"ipc": _ipc, "distortion": _distortion, "filteroffset": _filteroffset,
             "abvegaoffset": _abvegaoffset,
             "specwcs": _specwcs, "wavelengthrange": _wavelengthrange, "bkg": _bkg,
             # these four: the direct image's, the grism's
             "flat": _flats, "photom": _photoms, "apcorr": _apcorr, "area": _areas}
_ASDF = ("specwcs", "wavelengthrange")  # NIRISS WFSS keeps them as ASDF (MIRI LRS's SPECWCS is FITS)


def write_wfss_reference_files(ref_dir: str | Path, spec: WfssSpec | None = None, *,
                               reftypes: Iterable[str] = ALL_TYPES) -> dict[str, list[Path]]:
    """Write the NIRISS WFSS references; return {reftype: [paths]} for `build_crds_cache`."""
    spec = spec or WfssSpec()
    spec.validate()
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"niriss_{wfss.DETECTOR.lower()}_sub128"
    written: dict[str, list[Path]] = {}
    for reftype in reftypes:
        if reftype in _BUILDERS:
            build, ext = _BUILDERS[reftype], ".asdf" if reftype in _ASDF else extension(reftype)
        else:
            build, ext = builder_for({t: (lambda s, t=t: _detector(s).build(t, s))
                                      for t in DETECTOR1_TYPES}, reftype, "NIRISS")
        built = build(spec)
        if isinstance(built, list):
            written[reftype] = [save_reference(m, out / f"{stem}_{kind}_{reftype}{ext}")
                                for kind, m in zip(("image", "wfss"), built, strict=True)]
        else:
            written[reftype] = [save_reference(built, out / f"{stem}_{reftype}{ext}")]
    return written
