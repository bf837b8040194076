"""Which exposures seen so far a science exposure's level-2 association takes.

The matching follows jwst's level-2b rules (rules_level2b.py,
rules_level2_base.py) with header keywords standing in for the pool columns
jwst reads:

* nods (Asn_Lv2NRSFSS, Asn_Lv2NRSMSA, Asn_Lv2NRSIFUNod,
  Asn_Lv2MIRLRSFixedSlitNod): the other positions of the same pattern in the
  same activity (jwst's EXPSPCIN is a pool column; the activity is what the
  file name gives). For NIRSpec FS and MOS a position sharing the science's
  primary dither point is no background (AsnMixin_Lv2Nod.nod_background_overlap);
* imprints (AsnMixin_Lv2Imprint): same observation and optical path, same
  mosaic tile (MOSTILNO) and background status, the same target preferred,
  then the same dither point (DITHPTIN, else PATT_NUM) when several remain;
  and the imprints of the background targets taken (prune_imprints leaves
  the other background status alone: spec2 cleans each background with its own);
* backgrounds (Constraint_Background): BKGDTARG exposures of the same program
  and optical path. Which background observation serves which science is an
  APT candidate, not a header: without a plan any such exposure qualifies;
* WFSS direct image (AsnMixin_Lv2WFSS): the image3 products (i2d, cat, segm)
  of a direct image in the same observation, matched by filter (NIRCam) or
  blocking filter in the pupil wheel (NIRISS);
* MIRI LRS TA confirmation (Asn_MIRLRSTAConfirm): the MIR_TACONFIRM of the
  same visit (jwst matches the pool's OBS_ID), the last one before the science.

Whether a companion that has not arrived is still *expected* is decided here
too, per kind: nods are counted from NUMDTHPT; the direct image always is;
imprints and TA confirmations, optional in APT but taken in the same visit,
are expected until the visit is complete; dedicated backgrounds only when the
caller says so (a plan), since no header announces them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from calstream.steps.associations.records import Exposure, Level3Product, observation_of, program_of
from calstream.steps.routing import (
    BACKGROUND,
    DIRECT_IMAGE,
    IMPRINT,
    NOD,
    TARGET_ACQUISITION,
    Route,
    RoutingError,
)

_OPTICS = ("FILTER", "BAND", "PUPIL", "GRATING", "FXD_SLIT", "SUBARRAY", "CHANNEL")
_DIRECT_IMAGE_EXP_TYPES = {"NIRCAM": "NRC_IMAGE", "NIRISS": "NIS_IMAGE", "MIRI": "MIR_IMAGE"}
_DIRECT_IMAGE_SUFFIXES = ("i2d", "cat", "segm")
_PRIMARY_POINT_NODS = frozenset({"NRS_FIXEDSLIT", "NRS_MSASPEC"})


@dataclass(frozen=True)
class Companions:
    """The members chosen for one science exposure, and what is still awaited."""

    nods: tuple[Exposure, ...] = ()
    backgrounds: tuple[Exposure, ...] = ()
    imprints: tuple[Exposure, ...] = ()
    target_acquisition: Exposure | None = None
    direct_image: Level3Product | None = None
    missing: Mapping[str, str] = field(default_factory=dict)  # kind -> what is awaited


def _same(a: Exposure | Level3Product, b: Exposure | Level3Product, *keys: str) -> bool:
    return all(a.keywords.text(k) == b.keywords.text(k) for k in keys)


def _same_optics(
    a: Exposure | Level3Product, b: Exposure | Level3Product, keys: Iterable[str] = _OPTICS
) -> bool:
    # A keyword an arrival does not carry cannot disagree (jwst treats the
    # optional optical-path constraints the same way).
    ka, kb = a.keywords, b.keywords
    return all(ka.text(k) == kb.text(k) for k in keys if ka.has(k) and kb.has(k))


def _same_target(a: Exposure | Level3Product, b: Exposure | Level3Product) -> bool:
    return _same_optics(a, b, ("TARGETID",))


def _int(record: Exposure, key: str) -> int | None:
    # A garbled pattern keyword on one exposure must not stop the others' associations.
    try:
        return record.keywords.integer(key)
    except RoutingError:
        return None


def member_suffix(exposure: Exposure) -> str:
    """The stage-1 product a companion joins with: what its own route calibrates."""
    r = exposure.route
    return (r.stage2_input if r and r.stage2_input else None) or "rate"


def _has_product(exposure: Exposure) -> bool:
    return member_suffix(exposure) in exposure.products


# --- nods -------------------------------------------------------------------


def _nod_group(e: Exposure) -> tuple:
    n = e.name
    return (
        n.program, n.observation, n.visit, n.visit_group, n.sequence, n.activity, n.segment,
        n.detector, e.keywords.text("EXP_TYPE"), e.keywords.text("PATTTYPE"),
        _int(e, "NUMDTHPT"), _int(e, "SUBPXPTS") or 1,
    )


def nod_positions(science: Exposure) -> frozenset[int]:
    """The pattern positions (PATT_NUM) whose exposures are this science's background."""
    k = science.keywords
    total, own = _int(science, "NUMDTHPT"), _int(science, "PATT_NUM")
    if not total or not own:
        return frozenset()  # without the pattern no position can be placed
    subpx = _int(science, "SUBPXPTS") or 1
    others = {p for p in range(1, total + 1) if p != own}
    if k.text("EXP_TYPE") not in _PRIMARY_POINT_NODS:
        return frozenset(others)

    def primary(p: int) -> int:
        return (p - 1) // subpx

    others = {p for p in others if primary(p) != primary(own)}
    if k.text("FXD_SLIT") == "S1600A1" and total // subpx == 5:
        # The wide slit's 5-point pattern overlaps its neighbours.
        others = {p for p in others if abs(primary(p) - primary(own)) > 1}
    return frozenset(others)


def _nod_partners(science: Exposure, seen: Iterable[Exposure]) -> dict[int, Exposure]:
    wanted = nod_positions(science)
    group = _nod_group(science)
    partners: dict[int, Exposure] = {}
    for e in sorted(seen, key=lambda e: e.exposure_id):
        pos = _int(e, "PATT_NUM")
        if (
            pos in wanted
            and pos not in partners
            and _nod_group(e) == group
            and e.route is not None
            and e.route.role == "science"
            and _same_optics(science, e)
            and _same_target(science, e)
            and _has_product(e)
        ):
            partners[pos] = e
    return partners


# --- imprints, backgrounds, TA ------------------------------------------------


def _is_imprint_for(science: Exposure, e: Exposure) -> bool:
    ks, ke = science.keywords, e.keywords
    return (
        ke.flag("IS_IMPRT")
        and program_of(e) == program_of(science)
        and observation_of(e) == observation_of(science)
        and e.name.detector == science.name.detector
        and _same(science, e, "INSTRUME", "EXP_TYPE")
        and _same_optics(science, e)
        and (not (ks.has("MOSTILNO") and ke.has("MOSTILNO")) or _same(science, e, "MOSTILNO"))
        and ke.flag("BKGDTARG") == ks.flag("BKGDTARG")
    )


def _is_background_imprint(science: Exposure, e: Exposure) -> bool:
    """A background target's imprint that a non-background science's
    association takes along with that target's exposures: jwst's
    prune_imprints leaves the imprints of the other background status in, and
    spec2 cleans each background member with the imprint of its own status."""
    ks, ke = science.keywords, e.keywords
    return (
        ke.flag("IS_IMPRT") and ke.flag("BKGDTARG") and not ks.flag("BKGDTARG")
        and program_of(e) == program_of(science)
        and e.name.detector == science.name.detector
        and _same(science, e, "INSTRUME", "EXP_TYPE")
        and _same_optics(science, e)
        and (not (ks.has("MOSTILNO") and ke.has("MOSTILNO")) or _same(science, e, "MOSTILNO"))
    )


def _choose_imprints(science: Exposure, imprints: list[Exposure]) -> list[Exposure]:
    same_target = [e for e in imprints if _same_target(science, e)]
    imprints = same_target or imprints
    if len(imprints) > 1:
        key = "DITHPTIN" if science.keywords.has("DITHPTIN") else "PATT_NUM"
        same_point = [e for e in imprints if _same(science, e, key) and e.keywords.has(key)]
        imprints = same_point or imprints
    return imprints


def _is_background_for(science: Exposure, e: Exposure) -> bool:
    r = e.route
    return (
        r is not None
        and r.role == BACKGROUND
        and not r.is_tso
        and program_of(e) == program_of(science)
        and e.name.detector == science.name.detector
        and _same(science, e, "INSTRUME", "EXP_TYPE")
        and _same_optics(science, e)
    )


def _is_ta_for(science: Exposure, e: Exposure) -> bool:
    n, m = science.name, e.name
    return (
        e.keywords.text("EXP_TYPE") == "MIR_TACONFIRM"
        and (m.program, m.observation, m.visit) == (n.program, n.observation, n.visit)
    )


def _choose_ta(science: Exposure, confirms: list[Exposure]) -> Exposure | None:
    if not confirms:
        return None
    ordered = sorted(confirms, key=lambda e: e.exposure_id)
    before = [e for e in ordered if e.exposure_id < science.exposure_id]
    return before[-1] if before else ordered[0]


# --- WFSS direct image --------------------------------------------------------


def _is_direct_image_for(science: Exposure, p: Level3Product) -> bool:
    instrument = science.keywords.text("INSTRUME")
    kp = p.keywords
    if kp.text("EXP_TYPE") != _DIRECT_IMAGE_EXP_TYPES.get(instrument):
        return False
    if kp.text("INSTRUME") != instrument or program_of(p) != program_of(science):
        return False
    if observation_of(p) != observation_of(science) or not _same_target(science, p):
        return False
    if instrument == "NIRCAM":
        # The grism exposure keeps the filter; the direct image has it too.
        return _same(science, p, "FILTER")
    if instrument == "NIRISS":
        # The grism sits in the filter wheel, the blocking filter in the pupil wheel.
        return _same(science, p, "PUPIL") and _same_optics(science, p, ("SUBARRAY",))
    return True


def _direct_image_ready(p: Level3Product) -> bool:
    return all(s in p.products for s in _DIRECT_IMAGE_SUFFIXES)


# --- the public face --------------------------------------------------------


def companion_kind(
    science_route: Route, science: Exposure, candidate: Exposure | Level3Product
) -> str | None:
    """What ``candidate`` would be in ``science``'s level-2 association, or None."""
    needs = science_route.needs
    if isinstance(candidate, Level3Product):
        ok = DIRECT_IMAGE in needs and _is_direct_image_for(science, candidate)
        return DIRECT_IMAGE if ok else None
    if candidate.exposure_id == science.exposure_id:
        return None
    if NOD in needs and candidate in _nod_partners(science, [candidate]).values():
        return NOD
    if IMPRINT in needs and (_is_imprint_for(science, candidate) or (
            BACKGROUND in needs and _is_background_imprint(science, candidate))):
        return IMPRINT
    if BACKGROUND in needs and _is_background_for(science, candidate):
        return BACKGROUND
    if TARGET_ACQUISITION in needs and _is_ta_for(science, candidate):
        return TARGET_ACQUISITION
    return None


def gather_companions(
    science_route: Route,
    science: Exposure,
    seen: Iterable[Exposure | Level3Product],
    *,
    visit_complete: bool = False,
    expected: Iterable[str] = (),
) -> Companions:
    """Choose the companions among ``seen`` and say which kinds are still awaited.

    ``visit_complete``: every exposure of the science's visit has arrived
    (NEXPOSUR reached), so optional same-visit companions that are not here
    never will be. ``expected``: kinds a plan announces (e.g. "background");
    they are awaited until one arrives.
    """
    needs = science_route.needs
    if not needs:
        return Companions()  # nothing to choose, nothing to await (imaging, most spectra)
    expected = frozenset(expected)
    exposures = [s for s in seen if isinstance(s, Exposure) and s.exposure_id != science.exposure_id]
    products = [s for s in seen if isinstance(s, Level3Product)]
    missing: dict[str, str] = {}

    nods: tuple[Exposure, ...] = ()
    if NOD in needs:
        partners = _nod_partners(science, exposures)
        nods = tuple(partners[p] for p in sorted(partners))
        absent = sorted(nod_positions(science) - partners.keys())
        if absent:
            total = _int(science, "NUMDTHPT")
            missing[NOD] = f"nod position(s) {', '.join(map(str, absent))} of {total}"

    imprints: tuple[Exposure, ...] = ()
    if IMPRINT in needs:
        found = [e for e in exposures if _is_imprint_for(science, e) and _has_product(e)]
        imprints = tuple(sorted(_choose_imprints(science, found), key=lambda e: e.exposure_id))
        if not imprints and (IMPRINT in expected or not visit_complete):
            missing[IMPRINT] = "an imprint (leakcal) exposure of this tile, until the visit is complete"

    backgrounds: tuple[Exposure, ...] = ()
    if BACKGROUND in needs:
        found = [e for e in exposures if _is_background_for(science, e) and _has_product(e)]
        backgrounds = tuple(sorted(found, key=lambda e: e.exposure_id))
        if not backgrounds and BACKGROUND in expected:
            missing[BACKGROUND] = "a background-target (BKGDTARG) exposure the plan announces"

    if IMPRINT in needs and backgrounds:
        # The leakcals of the background targets taken, for spec2 to clean them with.
        sources = {observation_of(b) for b in backgrounds}
        imprints += tuple(sorted(
            (e for e in exposures if _is_background_imprint(science, e)
             and observation_of(e) in sources and _has_product(e)),
            key=lambda e: e.exposure_id))

    target_acquisition = None
    if TARGET_ACQUISITION in needs:
        found = [e for e in exposures if _is_ta_for(science, e) and _has_product(e)]
        target_acquisition = _choose_ta(science, found)
        if target_acquisition is None and (TARGET_ACQUISITION in expected or not visit_complete):
            missing[TARGET_ACQUISITION] = "the MIR_TACONFIRM image of this visit"

    direct_image = None
    if DIRECT_IMAGE in needs:
        ready = [p for p in products if _is_direct_image_for(science, p) and _direct_image_ready(p)]
        direct_image = min(ready, key=lambda p: p.name) if ready else None
        if direct_image is None:
            missing[DIRECT_IMAGE] = "the direct image's stage-3 i2d, cat and segm"

    return Companions(
        nods=nods,
        backgrounds=backgrounds,
        imprints=imprints,
        target_acquisition=target_acquisition,
        direct_image=direct_image,
        missing=missing,
    )
