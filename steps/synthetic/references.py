"""Synthetic CRDS reference files for a `ProgramSpec`'s detectors and subarray.

They describe the same detector `program.simulate_program` simulates: the
SUPERBIAS is its bias map, the FLAT its pixel response, GAIN, READNOISE and
DARK its gain, noise and dark rate; LINEARITY and IPC are identities because
the simulation is linear and has no inter-pixel capacitance. DISTORTION is
the SIAF linear pixel-to-V2/V3 mapping the simulation drew the stars with.

Detector references are subarray-sized (a full-frame set is ~630 MB); the
WCS, photometric and catalog references are small. A pars-tweakregstep
parameter reference tunes tweakreg for a sparse 5" field, as an instrument
team would, so that image3 aligns the dithers with its defaults otherwise.
Every file names its detector and subarray in its own header (absent: any),
which is what `crds_cache.build_crds_cache` matches on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from calstream.steps.synthetic.metadata import set_subarray
from calstream.steps.synthetic.program import (
    FULL_SIZE,
    PIXEL_SCALE,
    VIDL_PARITY,
    ProgramSpec,
    Subarray,
    detector_bias,
    detector_flat,
    detector_geometry,
    reference_pixel_mask,
    subarray_for,
)

AUTHOR = "calstream synthetic"
PEDIGREE = "DUMMY"
USEAFTER = "2022-01-01T00:00:00"
# stpipe's schema for step parameter files with the metadata CRDS requires.
STEP_CONFIG_SCHEMA = "http://stsci.edu/schemas/stpipe/step_config_with_metadata-1.0.0"

# What detector1 asks CRDS for on NIRCam imaging (jwst 3.0 defaults).
DETECTOR1_TYPES = (
    "mask",
    "saturation",
    "superbias",
    "linearity",
    "dark",
    "gain",
    "readnoise",
    "ipc",
)
# What image2 (assign_wcs, flat_field, photom) and image3 (tweakreg parameters,
# source_catalog) ask for.
IMAGE_TYPES = (
    "distortion",
    "filteroffset",
    "flat",
    "photom",
    "area",
    "pars-tweakregstep",
    "apcorr",
    "abvegaoffset",
)
ALL_TYPES = DETECTOR1_TYPES + IMAGE_TYPES

# Nominal NIRCam short-wave conversion from DN/s to MJy/sr (order of magnitude right).
PHOTMJSR = 2.0
# m_AB - m_Vega, roughly right for F150W.
ABVEGA = 1.2


def _dq_def(flags: Iterable[str]):
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


def _stamp(
    model,
    spec: ProgramSpec,
    detector: str | None,
    reftype: str,
    description: str,
    *,
    subarray: bool = True,
):
    stamp_reference(
        model,
        "NIRCAM",
        reftype,
        description,
        detector=None if detector is None else detector_geometry(detector).name,
        subarray=subarray_for(detector, spec.subarray) if detector is not None and subarray else None,
    )


def _shape(spec: ProgramSpec, detector: str) -> tuple[int, int]:
    sub = subarray_for(detector, spec.subarray)
    return sub.ysize, sub.xsize


def _mask(spec, detector):
    model = refpix_mask(reference_pixel_mask(spec, detector))
    _stamp(model, spec, detector, "mask", "Synthetic bad pixel mask: flags reference pixels only")
    return model


def _saturation(spec, detector):
    model = constant_saturation(_shape(spec, detector), spec.saturation)
    _stamp(model, spec, detector, "saturation", "Synthetic saturation levels (raw DN)")
    return model


def _superbias(spec, detector):
    model = bias_superbias(detector_bias(spec, detector))
    _stamp(model, spec, detector, "superbias", "Synthetic superbias: the simulated bias map")
    return model


def _linearity(spec, detector):
    model = identity_linearity(_shape(spec, detector))
    _stamp(model, spec, detector, "linearity", "Synthetic linearity: identity (data are linear)")
    return model


def _dark(spec, detector):
    from stdatamodels.jwst.datamodels import DarkModel

    ny, nx = _shape(spec, detector)
    tframe = subarray_for(detector, spec.subarray).frame_time
    # One frame per group so that the dark step can average it to any readout pattern.
    nframes_total = spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap
    ramp = spec.dark_rate * tframe * np.arange(1, nframes_total + 1, dtype=np.float32)
    data = np.broadcast_to(ramp[:, None, None], (nframes_total, ny, nx)).astype(np.float32)
    data[:, reference_pixel_mask(spec, detector)] = 0.0
    model = DarkModel(
        data=data,
        err=np.full(data.shape, 0.01, dtype=np.float32),
        dq=np.zeros((ny, nx), dtype=np.uint32),
        strict_validation=True,
    )
    model.dq_def = _dq_def(["DO_NOT_USE", "UNRELIABLE_DARK"])
    _stamp(model, spec, detector, "dark", "Synthetic dark: constant dark rate")
    e = model.meta.exposure
    e.readpatt = "RAPID"
    e.nframes = 1
    e.groupgap = 0
    e.ngroups = nframes_total
    e.nints = 1
    e.noutputs = subarray_for(detector, spec.subarray).noutputs
    return model


def _gain(spec, detector):
    model = constant_gain(_shape(spec, detector), spec.gain)
    _stamp(model, spec, detector, "gain", f"Synthetic gain: {spec.gain} e-/DN")
    return model


def _readnoise(spec, detector):
    model = constant_readnoise(_shape(spec, detector), spec.readnoise)
    _stamp(model, spec, detector, "readnoise", f"Synthetic CDS read noise: {spec.readnoise} DN")
    return model


def refpix_mask(reference_pixels: np.ndarray):
    from stdatamodels.jwst.datamodels import MaskModel, dqflags

    # REFERENCE_PIXEL alone: refpix ignores reference pixels also marked DO_NOT_USE.
    flag = dqflags.pixel["REFERENCE_PIXEL"]
    model = MaskModel(dq=np.where(reference_pixels, flag, 0).astype(np.uint32),
                      strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "REFERENCE_PIXEL"])
    return model


def constant_saturation(shape: tuple[int, int], level: float):
    from stdatamodels.jwst.datamodels import SaturationModel

    model = SaturationModel(data=np.full(shape, level, dtype=np.float32),
                            dq=np.zeros(shape, dtype=np.uint32), strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "NO_SAT_CHECK"])
    return model


def bias_superbias(bias: np.ndarray):
    from stdatamodels.jwst.datamodels import SuperBiasModel

    model = SuperBiasModel(data=bias, err=np.ones(bias.shape, dtype=np.float32),
                           dq=np.zeros(bias.shape, dtype=np.uint32), strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "UNRELIABLE_BIAS"])
    return model


def identity_linearity(shape: tuple[int, int], ncoeffs: int = 5):
    from stdatamodels.jwst.datamodels import LinearityModel

    coeffs = np.zeros((ncoeffs, *shape), dtype=np.float32)
    coeffs[1] = 1.0
    model = LinearityModel(coeffs=coeffs, dq=np.zeros(shape, dtype=np.uint32),
                           strict_validation=True)
    model.dq_def = _dq_def(["DO_NOT_USE", "NO_LIN_CORR"])
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


def _ipc(spec, detector):
    model = identity_ipc()
    _stamp(
        model,
        spec,
        detector,
        "ipc",
        "Synthetic IPC kernel: identity (none simulated)",
        subarray=False,
    )
    return model


def _flat(spec, detector):
    from stdatamodels.jwst.datamodels import FlatModel

    shape = _shape(spec, detector)
    model = FlatModel(
        data=detector_flat(spec, detector),
        err=np.full(shape, 0.001, dtype=np.float32),
        dq=np.where(reference_pixel_mask(spec, detector), 1, 0).astype(np.uint32),
        strict_validation=True,
    )
    model.dq_def = _dq_def(["DO_NOT_USE", "NO_FLAT_FIELD"])
    _stamp(model, spec, detector, "flat", "Synthetic flat: the simulated pixel response")
    model.meta.instrument.filter = spec.filter
    model.meta.instrument.pupil = spec.pupil
    return model


def _pixel_area_sr() -> float:
    return (PIXEL_SCALE / 3600.0 * math.pi / 180.0) ** 2


def _area(spec, detector, specs=()):
    from stdatamodels.jwst.datamodels import PixelAreaModel

    # photom slices the map at the science subarray's full-frame position and
    # the schema has no subarray keywords: cover the full frame from pixel 1 up
    # to the far corner of every subarray the map serves.
    subs = [subarray_for(detector, s.subarray) for s in (spec, *specs)]
    shape = (
        max(sub.ystart - 1 + sub.ysize for sub in subs),
        max(sub.xstart - 1 + sub.xsize for sub in subs),
    )
    model = PixelAreaModel(data=np.ones(shape, dtype=np.float32), strict_validation=True)
    _stamp(
        model,
        spec,
        detector,
        "area",
        "Synthetic pixel area map: no distortion, all ones",
        subarray=False,
    )
    model.meta.instrument.filter = spec.filter
    model.meta.instrument.pupil = spec.pupil
    model.meta.photometry.pixelarea_steradians = _pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = PIXEL_SCALE**2
    return model


def _elements(spec, specs) -> list[ProgramSpec]:
    """One spec per optical element (filter, pupil): a shared table has one row each."""
    seen: dict[tuple[str, str], ProgramSpec] = {}
    for s in (spec, *specs):
        seen.setdefault((s.filter, s.pupil), s)
    return list(seen.values())


def _photom(spec, detector, specs=()):
    from stdatamodels.jwst.datamodels import NrcImgPhotomModel

    table = np.array(
        [(s.filter, s.pupil, PHOTMJSR, 0.01 * PHOTMJSR) for s in _elements(spec, specs)],
        dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "<f4"), ("uncertainty", "<f4")],
    )
    model = NrcImgPhotomModel(phot_table=table, strict_validation=True)
    _stamp(model, spec, None, "photom", "Synthetic imaging photometric calibration")
    model.meta.photometry.pixelarea_steradians = _pixel_area_sr()
    model.meta.photometry.pixelarea_arcsecsq = PIXEL_SCALE**2
    return model


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


def _distortion(spec, detector):
    g = detector_geometry(detector)
    # The same mapping as program.pixel_to_v2v3.
    centre = (FULL_SIZE + 1) / 2 - 1
    model = linear_distortion(
        (centre, centre), PIXEL_SCALE, (g.v2_ref, g.v3_ref), g.v3_idl_yangle, VIDL_PARITY
    )
    _stamp(
        model,
        spec,
        detector,
        "distortion",
        "Synthetic distortion: SIAF linear model",
        subarray=False,
    )
    model.meta.instrument.module = g.module
    model.meta.instrument.channel = "SHORT"
    model.meta.instrument.p_pupil = "ANY|"
    model.meta.exposure.p_exptype = "NRC_IMAGE|NRC_TSIMAGE|NRC_FLAT|NRC_LED|NRC_WFSC|"
    return model


def _filteroffset(spec, detector, specs=()):
    from stdatamodels.jwst.datamodels import FilteroffsetModel

    filters = [
        {"filter": s.filter, "pupil": s.pupil, "column_offset": 0.0, "row_offset": 0.0}
        for s in _elements(spec, specs)
    ]
    model = FilteroffsetModel(filters=filters, instrument="NIRCAM", strict_validation=True)
    _stamp(model, spec, detector, "filteroffset", "Synthetic filter offsets: none", subarray=False)
    model.meta.instrument.module = detector_geometry(detector).module
    model.meta.instrument.channel = "SHORT"
    return model


def _apcorr_rows(spec):
    # Gaussian PSF: encircled energy f inside r = sigma * sqrt(-2 ln(1 - f)).
    fractions = np.arange(0.1, 0.95, 0.1)
    radii = spec.star_sigma * np.sqrt(-2.0 * np.log(1.0 - fractions))
    sky_in, sky_out = 4.0 * radii[-1], 6.0 * radii[-1]
    return [
        (spec.filter, spec.pupil, f, r, 1.0 / f, sky_in, sky_out)
        for f, r in zip(fractions, radii, strict=True)
    ]


def _apcorr(spec, detector, specs=()):
    from stdatamodels.jwst.datamodels import NrcImgApcorrModel

    table = np.array(
        [row for s in _elements(spec, specs) for row in _apcorr_rows(s)],
        dtype=[
            ("filter", "S12"),
            ("pupil", "S15"),
            ("eefraction", "<f4"),
            ("radius", "<f4"),
            ("apcorr", "<f4"),
            ("skyin", "<f4"),
            ("skyout", "<f4"),
        ],
    )
    model = NrcImgApcorrModel(apcorr_table=table, strict_validation=True)
    _stamp(model, spec, None, "apcorr", "Synthetic aperture corrections for a Gaussian PSF")
    return model


def _abvegaoffset(spec, detector, specs=()):
    from astropy.table import Table
    from stdatamodels.jwst.datamodels import ABVegaOffsetModel

    elements = _elements(spec, specs)
    model = ABVegaOffsetModel(strict_validation=True)
    model.abvega_offset = Table(
        {
            "filter": [s.filter for s in elements],
            "pupil": [s.pupil for s in elements],
            "abvega_offset": np.full(len(elements), ABVEGA, dtype=np.float32),
        }
    )
    _stamp(model, spec, None, "abvegaoffset", "Synthetic AB minus Vega magnitude offsets")
    return model


class TreeReference:
    """A reference written from a plain tree rather than a datamodel; subclasses
    validate and save it (what `save_reference` needs)."""

    def __init__(self, tree: dict):
        self.tree = tree

    def close(self) -> None:
        pass


class _StepParameters(TreeReference):
    """A CRDS parameter reference (pars-*): an stpipe step config with CRDS metadata."""

    def validate(self) -> None:
        import asdf

        with asdf.AsdfFile(self.tree) as af:
            af.validate()
            schema = asdf.schema.load_schema(STEP_CONFIG_SCHEMA, resolve_references=True)
            asdf.schema.validate(af.tree, schema=schema)

    def save(self, path: Path) -> None:
        import asdf

        asdf.AsdfFile(self.tree).write_to(path)


def _pars_tweakregstep(spec, detector):
    # tweakreg's defaults want 15 matched sources at least 1" apart, more than
    # a 5" subarray holds; these are what an instrument team would deliver
    # for a sparse small field. The 2" search radius still finds a PLANNED
    # pointing's error.
    from datetime import UTC, datetime

    now = datetime.now(UTC).replace(microsecond=0).isoformat().removesuffix("+00:00")
    return _StepParameters(
        {
            "class": "jwst.tweakreg.tweakreg_step.TweakRegStep",
            "name": "tweakreg",
            "parameters": {"minobj": 5, "separation": 0.3, "tolerance": 0.2},
            "meta": {
                "author": AUTHOR,
                "date": now,
                "description": "Synthetic tweakreg parameters for small sparse fields",
                "instrument": {"name": "NIRCAM"},
                "subarray": {"name": subarray_for(detector, spec.subarray).name},
                "origin": "calstream",
                "pedigree": PEDIGREE,
                "reftype": "pars-tweakregstep",
                "telescope": "JWST",
                "useafter": USEAFTER,
            },
        }
    )


_BUILDERS = {
    "mask": (_mask, ".fits"),
    "saturation": (_saturation, ".fits"),
    "superbias": (_superbias, ".fits"),
    "linearity": (_linearity, ".fits"),
    "dark": (_dark, ".fits"),
    "gain": (_gain, ".fits"),
    "readnoise": (_readnoise, ".fits"),
    "ipc": (_ipc, ".fits"),
    "flat": (_flat, ".fits"),
    "area": (_area, ".fits"),
    "photom": (_photom, ".fits"),
    "distortion": (_distortion, ".asdf"),
    "filteroffset": (_filteroffset, ".asdf"),
    "pars-tweakregstep": (_pars_tweakregstep, ".asdf"),
    "apcorr": (_apcorr, ".fits"),
    "abvegaoffset": (_abvegaoffset, ".asdf"),
}
# Types that do not depend on the detector: one file serves every detector.
_SHARED = {"photom", "apcorr", "abvegaoffset", "pars-tweakregstep"}
# Per detector but full-frame, so valid for any subarray.
_ANY_SUBARRAY = {"distortion", "filteroffset", "ipc"}
# Built from every spec they serve (a row per filter, or the union of subarrays).
_MERGED = {"photom", "apcorr", "abvegaoffset", "filteroffset", "area"}


def write_reference_files(
    ref_dir: str | Path,
    spec: ProgramSpec,
    *,
    reftypes: Iterable[str] = ALL_TYPES,
) -> dict[str, list[Path]]:
    """Write references for every detector of `spec`; return {reftype: [paths]}.

    File names say what they are (``nircam_nrcb1_sub160_gain.fits``); CRDS
    names are given when `crds_cache.build_crds_cache` files them.
    """
    return write_visit_reference_files(ref_dir, [spec], reftypes=reftypes)


def _frames(spec: ProgramSpec) -> int:
    return spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap


def _selections(reftype: str, specs: Sequence[ProgramSpec]):
    """(spec to build from, detector, the other specs it serves, file stem) per file.

    One file per CRDS selection (detector and subarray, or fewer): the
    selection must be unique in a context, so specs that share one share a
    file, built from all of them where it holds a row per filter.
    """
    if reftype in _SHARED:
        if reftype.startswith("pars-"):
            for sub in dict.fromkeys(s.subarray.upper() for s in specs):
                group = [s for s in specs if s.subarray.upper() == sub]
                yield group[0], group[0].detectors[0], group[1:], f"nircam_{sub.lower()}_{reftype}"
            return
        filters = "-".join(dict.fromkeys(s.filter.lower() for s in specs))
        yield specs[0], specs[0].detectors[0], specs[1:], f"nircam_{filters}_{reftype}"
        return
    detectors = dict.fromkeys(d.lower() for s in specs for d in s.detectors)
    for det in detectors:
        users = [s for s in specs if det in (d.lower() for d in s.detectors)]
        if reftype in _ANY_SUBARRAY:
            yield users[0], det, users[1:], f"nircam_{det}_{reftype}"
        elif reftype == "area":
            subs = "-".join(dict.fromkeys(s.subarray.lower() for s in users))
            yield users[0], det, users[1:], f"nircam_{det}_{subs}_{reftype}"
        else:
            for sub in dict.fromkeys(s.subarray.upper() for s in users):
                group = [s for s in users if s.subarray.upper() == sub]
                if len({(s.filter, s.pupil) for s in group}) > 1 and reftype == "flat":
                    raise ValueError(
                        f"{det} {sub}: one flat per detector and subarray, "
                        f"but the specs use {sorted({(s.filter, s.pupil) for s in group})}"
                    )
                # The longest ramp: a dark serves any shorter readout.
                spec = max(group, key=_frames)
                yield spec, det, (), f"nircam_{det}_{sub.lower()}_{reftype}"


def write_visit_reference_files(
    ref_dir: str | Path,
    specs: Sequence[ProgramSpec],
    *,
    reftypes: Iterable[str] = ALL_TYPES,
) -> dict[str, list[Path]]:
    """References for several NIRCam specs (a visit's modes) that fit in one CRDS context.

    Per detector and subarray as `write_reference_files`; files the specs
    would otherwise duplicate (per-detector WCS, shared tables) are written
    once, with a row for every filter and pupil. Specs that use the same
    detector and subarray must agree on the filter.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("no specs")
    for spec in specs:
        spec.validate()
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for reftype in reftypes:
        build, ext = builder_for(_BUILDERS, reftype)
        for spec, detector, others, stem in _selections(reftype, specs):
            model = build(spec, detector, others) if reftype in _MERGED else build(spec, detector)
            written.setdefault(reftype, []).append(save_reference(model, out / f"{stem}{ext}"))
    return written


def builder_for(builders: dict, reftype: str, instrument: str = ""):
    """(builder, file extension) of `reftype` in `builders`, or a ValueError naming the known types."""
    try:
        return builders[reftype]
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
