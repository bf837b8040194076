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

from pathlib import Path

from calstream.steps.synthetic import coronagraphy as coron
from calstream.steps.synthetic.coronagraphy import CoronSpec
from calstream.steps.synthetic.detector_references import (
    DETECTOR1_TYPES,
    DetectorReferences,
    write_mode_references,
)

IMAGE2_TYPES = ("distortion", "filteroffset", "flat", "photom", "area")
CORON3_TYPES = ("psfmask",)
ALL_TYPES = DETECTOR1_TYPES + IMAGE2_TYPES + CORON3_TYPES
_OPTICS = {"instrument.filter": coron.FILTER, "instrument.pupil": coron.PUPIL}


def _detector(spec: CoronSpec) -> DetectorReferences:
    return DetectorReferences("NIRCAM", coron.DETECTOR, coron.SUBARRAY,
                              coron.reference_pixel_mask(), lambda: coron.detector_bias(spec))


def _distortion(spec):
    centre = (coron.FULL_SIZE + 1) / 2 - 1
    return _detector(spec).distortion(
        (centre, centre), coron.PIXEL_SCALE, coron.FULL_FRAME,
        "Synthetic distortion: SIAF linear model",
        meta={"instrument.module": "A", "instrument.channel": "LONG",
              "instrument.p_pupil": "ANY|", "exposure.p_exptype": f"{coron.EXP_TYPE}|"})


def _filteroffset(spec):
    return _detector(spec).filteroffset(
        [{"filter": coron.FILTER, "pupil": coron.PUPIL, "column_offset": 0.0, "row_offset": 0.0}],
        "Synthetic filter offsets: none",
        meta={"instrument.module": "A", "instrument.channel": "LONG"})


def _flat(spec):
    return _detector(spec).flat(coron.detector_flat(spec),
                                "Synthetic flat: the simulated pixel response",
                                flag_reference_pixels=True, meta=_OPTICS)


def _photom(spec):
    from stdatamodels.jwst.datamodels import NrcImgPhotomModel

    return _detector(spec).photom(NrcImgPhotomModel, (coron.FILTER, coron.PUPIL), coron.PHOTMJSR,
                                  coron.PIXEL_SCALE,
                                  "Synthetic coronagraphic photometric calibration")


def _area(spec):
    return _detector(spec).area_to_subarray("Synthetic pixel area map: no distortion, all ones",
                                            pixel_scale=coron.PIXEL_SCALE, meta=_OPTICS)


def _psfmask(spec):
    from stdatamodels.jwst.datamodels import PsfMaskModel

    model = PsfMaskModel(data=coron.occulter_transmission(spec), strict_validation=True)
    return _detector(spec).stamp(model, "psfmask", f"Synthetic {coron.CORONAGRAPH} transmission",
                                 meta={**_OPTICS, "instrument.coronagraph": coron.CORONAGRAPH,
                                       "exposure.type": coron.EXP_TYPE})


def write_coron_reference_files(ref_dir: str | Path, spec: CoronSpec, *,
                                reftypes=ALL_TYPES) -> dict[str, list[Path]]:
    """Write the references of `spec`; return {reftype: [paths]} for `build_crds_cache`."""
    return write_mode_references(
        ref_dir, spec, _detector(spec),
        {"distortion": _distortion, "filteroffset": _filteroffset, "flat": _flat,
         "photom": _photom, "area": _area, "psfmask": _psfmask},
        reftypes, what="NIRCam coronagraphy",
        stem=f"nircam_{coron.DETECTOR.lower()}_{coron.SUBARRAY.name.lower()}")
