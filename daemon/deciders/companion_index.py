"""Where a level-2 association's companions can be, so no decision scans a program.

``steps.associations.matching`` decides what a record is to a science
exposure (nod, imprint, background, TA confirmation, direct image); every
kind matches only records that share some keys with the science:

* nods: the same visit and detector (``_nod_group``);
* imprints: IS_IMPRT exposures of the same program, observation and detector;
* backgrounds: background-role exposures of the same program and detector,
  and the imprints of background targets (taken with them);
* TA confirmations: MIR_TACONFIRM exposures of the same visit;
* direct images: level-3 products of the same program and observation.

So the planner files every record under those keys once, when it arrives,
and asks only the buckets a science's route needs (a superset of its
companions: the matching itself still decides). The other direction too: a
new record can be a companion only of the sciences filed under its keys.
Both are what a scan of the whole program would find, in the same order
(every caller sorts), at the cost of a bucket instead of a program.
"""

from __future__ import annotations

from calstream.steps.associations import Exposure, Level3Product
from calstream.steps.associations.records import observation_of, program_of
from calstream.steps.routing import BACKGROUND, DIRECT_IMAGE, IMPRINT, NOD, TARGET_ACQUISITION

Bucket = tuple[str, ...]


def _exposure_buckets(e: Exposure) -> list[Bucket]:
    """The buckets a record is filed under as a possible companion."""
    n = e.name
    found: list[Bucket] = [(NOD, n.visit_id, n.detector)]
    if e.keywords.flag("IS_IMPRT"):
        found.append((IMPRINT, n.program, n.observation, n.detector))
    r = e.route
    if r is not None and r.role == BACKGROUND or (
            r is not None and r.role == IMPRINT and e.keywords.flag("BKGDTARG")):
        # A background target's imprint joins the sciences that take that target.
        found.append((BACKGROUND, n.program, n.detector))
    if e.keywords.text("EXP_TYPE") == "MIR_TACONFIRM":
        found.append((TARGET_ACQUISITION, n.program, n.observation, n.visit))
    return found


def _science_buckets(science: Exposure, needs: tuple[str, ...]) -> list[Bucket]:
    """The buckets that hold every companion ``science`` may take."""
    n = science.name
    return [_BUCKET_OF[k](n) for k in needs if k in _BUCKET_OF]


# Each kind of companion's bucket, from the science's name (only the ones it needs are made).
_BUCKET_OF = {
    NOD: lambda n: (NOD, n.visit_id, n.detector),
    IMPRINT: lambda n: (IMPRINT, n.program, n.observation, n.detector),
    BACKGROUND: lambda n: (BACKGROUND, n.program, n.detector),
    TARGET_ACQUISITION: lambda n: (TARGET_ACQUISITION, n.program, n.observation, n.visit),
    DIRECT_IMAGE: lambda n: (DIRECT_IMAGE, n.program, n.observation)}


def _product_bucket(p: Level3Product) -> Bucket:
    return (DIRECT_IMAGE, program_of(p), observation_of(p))


class CompanionIndex:
    """Record ids by companion bucket, and science ids by the buckets they draw from."""

    def __init__(self) -> None:
        self._records: dict[Bucket, set[str]] = {}  # bucket -> exposure ids / product names
        self._sciences: dict[Bucket, set[str]] = {}  # bucket -> science exposure ids
        self._filed: dict[str, list[Bucket]] = {}  # exposure id -> its buckets

    def add_exposure(self, e: Exposure) -> None:
        buckets = _exposure_buckets(e)
        old = self._filed.get(e.exposure_id)
        if old == buckets:
            return
        for b in old or ():
            self._records.get(b, set()).discard(e.exposure_id)
        self._filed[e.exposure_id] = buckets
        for b in buckets:
            self._records.setdefault(b, set()).add(e.exposure_id)

    def add_product(self, p: Level3Product) -> None:
        self._records.setdefault(_product_bucket(p), set()).add(p.name)

    def add_science(self, science: Exposure, needs: tuple[str, ...]) -> None:
        for b in _science_buckets(science, needs):
            self._sciences.setdefault(b, set()).add(science.exposure_id)

    def companions_of(self, science: Exposure, needs: tuple[str, ...]) -> set[str]:
        """Ids of every record that may be ``science``'s companion (itself excluded)."""
        found: set[str] = set()
        for b in _science_buckets(science, needs):
            found |= self._records.get(b, set())
        found.discard(science.exposure_id)
        return found

    def sciences_for_exposure(self, e: Exposure) -> set[str]:
        """Ids of the sciences ``e`` may be a companion of."""
        found: set[str] = set()
        for b in self._filed.get(e.exposure_id) or _exposure_buckets(e):
            found |= self._sciences.get(b, set())
        return found

    def sciences_for_product(self, p: Level3Product) -> set[str]:
        return set(self._sciences.get(_product_bucket(p), set()))
