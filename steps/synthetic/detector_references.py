"""One detector's synthetic references, built the same way for every mode.

A `DetectorReferences` knows what the simulation of one detector read in
one subarray did (its reference pixels, bias, readout) and builds the
references describing it: the detector1 types every mode shares (MASK,
SATURATION, SUPERBIAS, LINEARITY, DARK, GAIN, READNOISE, IPC) and the shapes
of the image2 ones (FLAT, AREA, DISTORTION, FILTEROFFSET, an imaging PHOTOM)
with the mode's values. Files are stamped with the detector and, when
subarray-sized, the subarray: what `crds_cache.build_crds_cache` matches on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calstream.steps.synthetic.focal_plane import Subarray
from calstream.steps.synthetic.reference_models import (
    bias_superbias,
    builder_for,
    constant_gain,
    constant_readnoise,
    constant_saturation,
    dq_def,
    identity_ipc,
    identity_linearity,
    linear_distortion,
    pixel_area_sr,
    refpix_mask,
    save_reference,
    stamp_reference,
)

# The types `DetectorReferences.build` makes alike for every detector.
DETECTOR1_TYPES = ("mask", "saturation", "superbias", "linearity", "dark", "gain", "readnoise",
                   "ipc")


def set_meta(model, values: Mapping[str, object]) -> None:
    """Set dotted meta paths ("instrument.filter") in order: the order a tree is written in."""
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = model.meta
        for name in parents:
            node = getattr(node, name)
        setattr(node, leaf, value)


@dataclass(frozen=True)
class DetectorReferences:
    instrument: str  # "NIRCAM", "NIRISS", "MIRI"
    detector: str
    subarray: Subarray
    # Reference pixels (no signal) of the subarray.
    refpix: np.ndarray
    # The simulated bias map (None: the detector has no SUPERBIAS).
    bias: Callable[[], np.ndarray] | None = None
    # The instrument as the descriptions name it ("NIRISS "), or "".
    label: str = ""
    mask_description: str = "Synthetic bad pixel mask: flags reference pixels only"
    linearity_coeffs: int = 5
    dark_readpatt: str = "RAPID"  # the dark holds one frame per group of this pattern

    @property
    def shape(self) -> tuple[int, int]:
        return self.refpix.shape

    def stamp(self, model, reftype: str, description: str, *, subarray: bool = True,
              meta: Mapping[str, object] | None = None):
        stamp_reference(model, self.instrument, reftype, description, detector=self.detector,
                        subarray=self.subarray if subarray else None)
        set_meta(model, meta or {})
        return model

    def build(self, reftype: str, spec):
        """One of `DETECTOR1_TYPES` for `spec`'s detector parameters."""
        label = self.label
        if reftype == "mask":
            return self.stamp(refpix_mask(self.refpix), "mask", self.mask_description)
        if reftype == "saturation":
            return self.stamp(constant_saturation(self.shape, spec.saturation), "saturation",
                              f"Synthetic {label}saturation levels (raw DN)")
        if reftype == "superbias":
            return self.stamp(bias_superbias(self.bias()), "superbias",
                              f"Synthetic {label}superbias: the simulated bias map")
        if reftype == "linearity":
            return self.stamp(identity_linearity(self.shape, self.linearity_coeffs), "linearity",
                              f"Synthetic {label}linearity: identity (data are linear)")
        if reftype == "dark":
            return self.dark(spec)
        if reftype == "gain":
            return self.stamp(constant_gain(self.shape, spec.gain), "gain",
                              f"Synthetic {label}gain: {spec.gain} e-/DN")
        if reftype == "readnoise":
            return self.stamp(constant_readnoise(self.shape, spec.readnoise), "readnoise",
                              f"Synthetic {label}CDS read noise: {spec.readnoise} DN")
        if reftype == "ipc":
            return self.stamp(identity_ipc(), "ipc",
                              f"Synthetic {label}IPC kernel: identity (none simulated)",
                              subarray=False)
        raise ValueError(f"{reftype!r} is not one of {DETECTOR1_TYPES}")

    def dark(self, spec):
        """A constant dark rate, one frame per group, as many frames as `spec` reads:
        the dark step averages it to any readout pattern."""
        from stdatamodels.jwst.datamodels import DarkModel

        ny, nx = self.shape
        nframes = spec.ngroups * (spec.nframes + spec.groupgap) - spec.groupgap
        ramp = spec.dark_rate * self.subarray.frame_time * np.arange(1, nframes + 1,
                                                                      dtype=np.float32)
        data = np.broadcast_to(ramp[:, None, None], (nframes, ny, nx)).astype(np.float32)
        data[:, self.refpix] = 0.0
        model = DarkModel(data=data, err=np.full(data.shape, 0.01, dtype=np.float32),
                          dq=np.zeros((ny, nx), dtype=np.uint32), strict_validation=True)
        model.dq_def = dq_def(["DO_NOT_USE", "UNRELIABLE_DARK"])
        return self.stamp(model, "dark", f"Synthetic {self.label}dark: constant dark rate", meta={
            "exposure.readpatt": self.dark_readpatt, "exposure.nframes": 1,
            "exposure.groupgap": 0, "exposure.ngroups": nframes, "exposure.nints": 1,
            "exposure.noutputs": self.subarray.noutputs})

    def flat(self, data: np.ndarray, description: str, *, flag_reference_pixels: bool,
             meta: Mapping[str, object]):
        from stdatamodels.jwst.datamodels import FlatModel

        dq = np.where(self.refpix, 1, 0) if flag_reference_pixels else np.zeros(self.shape)
        model = FlatModel(data=data, err=np.full(self.shape, 0.001, dtype=np.float32),
                          dq=dq.astype(np.uint32), strict_validation=True)
        model.dq_def = dq_def(["DO_NOT_USE", "NO_FLAT_FIELD"])
        return self.stamp(model, "flat", description, meta=meta)

    def area(self, shape: tuple[int, int], description: str, *, pixel_scale: float,
             meta: Mapping[str, object]):
        """A map of ones (no distortion) of `shape`: photom cuts the science
        subarray out of it at its full-frame place, so it reaches that far."""
        from stdatamodels.jwst.datamodels import PixelAreaModel

        model = PixelAreaModel(data=np.ones(shape, dtype=np.float32), strict_validation=True)
        return self.stamp(model, "area", description, subarray=False, meta={
            **meta, "photometry.pixelarea_steradians": pixel_area_sr(pixel_scale),
            "photometry.pixelarea_arcsecsq": pixel_scale**2})

    def area_to_subarray(self, description: str, *, pixel_scale: float,
                         meta: Mapping[str, object]):
        """`area` reaching just the far corner of the detector's subarray."""
        sub = self.subarray
        return self.area((sub.ystart - 1 + sub.ysize, sub.xstart - 1 + sub.xsize), description,
                         pixel_scale=pixel_scale, meta=meta)

    def photom(self, model_class, optics: tuple[str, str], photmjsr: float, pixel_scale: float,
               description: str):
        """An imaging PHOTOM of one (filter, pupil) row, valid for any subarray."""
        return imaging_photom(model_class, [optics], photmjsr, pixel_scale, lambda model: self.stamp(
            model, "photom", description, subarray=False))

    def distortion(self, centre: tuple[float, float], pixel_scale: float, aperture,
                   description: str, *, meta: Mapping[str, object]):
        """The linear mapping of `aperture` (a `focal_plane.LinearAperture`) from
        0-based pixel `centre`, as `reference_models.linear_distortion`."""
        model = linear_distortion(centre, pixel_scale, (aperture.v2_ref, aperture.v3_ref),
                                  aperture.v3_idl_yangle, aperture.vparity)
        return self.stamp(model, "distortion", description, subarray=False, meta=meta)

    def filteroffset(self, filters: list[dict], description: str, *,
                     meta: Mapping[str, object] | None = None):
        from stdatamodels.jwst.datamodels import FilteroffsetModel

        model = FilteroffsetModel(filters=filters, instrument=self.instrument,
                                  strict_validation=True)
        return self.stamp(model, "filteroffset", description, subarray=False, meta=meta)


def imaging_photom(model_class, optics: Iterable[tuple[str, str]], photmjsr: float,
                   pixel_scale: float, stamp: Callable):
    """An imaging PHOTOM table: a row per (filter, pupil), all at `photmjsr`;
    `stamp(model)` gives it its CRDS metadata."""
    table = np.array(
        [(f, p, photmjsr, 0.01 * photmjsr) for f, p in optics],
        dtype=[("filter", "S12"), ("pupil", "S12"), ("photmjsr", "<f4"), ("uncertainty", "<f4")])
    model = model_class(phot_table=table, strict_validation=True)
    stamp(model)
    set_meta(model, {"photometry.pixelarea_steradians": pixel_area_sr(pixel_scale),
                     "photometry.pixelarea_arcsecsq": pixel_scale**2})
    return model


def write_mode_references(ref_dir: str | Path, spec, detector: DetectorReferences,
                          builders: Mapping[str, Callable], reftypes: Iterable[str], *,
                          what: str, stem: str,
                          extensions: Mapping[str, str] | None = None) -> dict[str, list[Path]]:
    """Write a one-detector mode's references as `{stem}_{reftype}.ext`; return
    {reftype: [paths]} for `build_crds_cache`. `builders` (reftype -> build(spec))
    adds to, or replaces, the detector's own `DETECTOR1_TYPES`; `extensions`
    (reftype -> ".asdf") overrides a type's usual file format."""
    spec.validate()
    out = Path(ref_dir)
    out.mkdir(parents=True, exist_ok=True)
    every = {t: (lambda s, t=t: detector.build(t, s)) for t in DETECTOR1_TYPES}
    every.update(builders)
    written: dict[str, list[Path]] = {}
    for reftype in reftypes:
        build, ext = builder_for(every, reftype, what)
        ext = (extensions or {}).get(reftype, ext)
        written[reftype] = [save_reference(build(spec), out / f"{stem}_{reftype}{ext}")]
    return written
