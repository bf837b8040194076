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

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from calstream.steps.synthetic.detector_references import (
    DETECTOR1_TYPES,
    DetectorReferences,
    imaging_photom,
)
from calstream.steps.synthetic.imaging_spec import ProgramSpec
from calstream.steps.synthetic.nircam_detectors import (
    FULL_SIZE,
    PIXEL_SCALE,
    detector_bias,
    detector_flat,
    detector_geometry,
    reference_pixel_mask,
    subarray_for,
)
from calstream.steps.synthetic.reference_models import (
    AUTHOR,
    PEDIGREE,
    USEAFTER,
    TreeReference,
    builder_for,
    save_reference,
    stamp_reference,
)

# stpipe's schema for step parameter files with the metadata CRDS requires.
STEP_CONFIG_SCHEMA = "http://stsci.edu/schemas/stpipe/step_config_with_metadata-1.0.0"

# What image2 (assign_wcs, flat_field, photom) and image3 (tweakreg parameters,
# source_catalog) ask for, after detector1's `DETECTOR1_TYPES` (jwst 3.0 defaults).
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


def _detector(spec: ProgramSpec, detector: str) -> DetectorReferences:
    return DetectorReferences("NIRCAM", detector_geometry(detector).name,
                              subarray_for(detector, spec.subarray),
                              reference_pixel_mask(spec, detector),
                              lambda: detector_bias(spec, detector))


# The exposure types NIRCam's imaging references serve, as CRDS's own rmaps
# select them: a shared table valid for any detector must not be picked for
# another mode's exposure (a DHS grism's photom found the imaging table and
# failed on its missing 'order' column).
IMAGING_EXP_TYPES = "NRC_IMAGE|NRC_TSIMAGE|NRC_FLAT|NRC_LED|NRC_WFSC|"


def _stamp_shared(model, reftype: str, description: str, *, by_exp_type: bool = True) -> None:
    """Stamp a reference valid for any detector and subarray of the imaging
    modes (``by_exp_type=False``: of any mode, for a schema without the
    keyword: ABVEGAOFFSET's, which only image3 asks for)."""
    stamp_reference(model, "NIRCAM", reftype, description)
    if by_exp_type:
        model.meta.exposure.p_exptype = IMAGING_EXP_TYPES


def _optics(spec: ProgramSpec) -> dict:
    return {"instrument.filter": spec.filter, "instrument.pupil": spec.pupil}


def _flat(spec, detector):
    return _detector(spec, detector).flat(
        detector_flat(spec, detector), "Synthetic flat: the simulated pixel response",
        flag_reference_pixels=True, meta=_optics(spec))


def _area(spec, detector, specs=()):
    # photom slices the map at the science subarray's full-frame position and
    # the schema has no subarray keywords: cover the full frame from pixel 1 up
    # to the far corner of every subarray the map serves.
    subs = [subarray_for(detector, s.subarray) for s in (spec, *specs)]
    shape = (
        max(sub.ystart - 1 + sub.ysize for sub in subs),
        max(sub.xstart - 1 + sub.xsize for sub in subs),
    )
    return _detector(spec, detector).area(
        shape, "Synthetic pixel area map: no distortion, all ones", pixel_scale=PIXEL_SCALE,
        meta=_optics(spec))


def _elements(spec, specs) -> list[ProgramSpec]:
    """One spec per optical element (filter, pupil): a shared table has one row each."""
    seen: dict[tuple[str, str], ProgramSpec] = {}
    for s in (spec, *specs):
        seen.setdefault((s.filter, s.pupil), s)
    return list(seen.values())


def _photom(spec, detector, specs=()):
    from stdatamodels.jwst.datamodels import NrcImgPhotomModel

    return imaging_photom(
        NrcImgPhotomModel, [(s.filter, s.pupil) for s in _elements(spec, specs)], PHOTMJSR,
        PIXEL_SCALE,
        lambda model: _stamp_shared(model, "photom", "Synthetic imaging photometric calibration"))


def _distortion(spec, detector):
    g = detector_geometry(detector)
    # The same mapping as nircam_detectors.pixel_to_v2v3.
    centre = (FULL_SIZE + 1) / 2 - 1
    return _detector(spec, detector).distortion(
        (centre, centre), PIXEL_SCALE, g.aperture, "Synthetic distortion: SIAF linear model",
        meta={"instrument.module": g.module, "instrument.channel": "SHORT",
              "instrument.p_pupil": "ANY|",
              "exposure.p_exptype": IMAGING_EXP_TYPES})


def _filteroffset(spec, detector, specs=()):
    filters = [
        {"filter": s.filter, "pupil": s.pupil, "column_offset": 0.0, "row_offset": 0.0}
        for s in _elements(spec, specs)
    ]
    return _detector(spec, detector).filteroffset(
        filters, "Synthetic filter offsets: none",
        meta={"instrument.module": detector_geometry(detector).module,
              "instrument.channel": "SHORT"})


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
    _stamp_shared(model, "apcorr", "Synthetic aperture corrections for a Gaussian PSF")
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
    _stamp_shared(model, "abvegaoffset", "Synthetic AB minus Vega magnitude offsets",
                  by_exp_type=False)
    return model


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
    **{t: (lambda spec, detector, t=t: _detector(spec, detector).build(t, spec))
       for t in DETECTOR1_TYPES},
    "flat": _flat,
    "area": _area,
    "photom": _photom,
    "distortion": _distortion,
    "filteroffset": _filteroffset,
    "pars-tweakregstep": _pars_tweakregstep,
    "apcorr": _apcorr,
    "abvegaoffset": _abvegaoffset,
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
        build, ext = builder_for(_BUILDERS, reftype, "NIRCam")
        for spec, detector, others, stem in _selections(reftype, specs):
            model = build(spec, detector, others) if reftype in _MERGED else build(spec, detector)
            written.setdefault(reftype, []).append(save_reference(model, out / f"{stem}{ext}"))
    return written
