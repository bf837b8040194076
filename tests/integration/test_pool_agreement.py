"""calstream's level-3 candidates against jwst's asn_generate, on the pools jwst ships.

jwst's test data (jwst/associations/tests/data) holds association pools.
Those with real JWST file names -- from real programs, or cut from them --
are read by calstream as a plan (steps.plans.parse_pool, what `calstream
plan load` reads) and grouped into level-3 candidates the way the planner
does (daemon.deciders.level3_state.keys_of, steps.associations.product_name);
the same pool goes through asn_generate as its command line runs it
(candidates and discovery). Each candidate is compared as (acid, product
name, member exposures). docs/design.md, "Agreement with jwst's association
generator", gives the figures and explains every difference listed in
KNOWN_DIFFERENCES.

The other shipped pools are jwst's templates (values such as
``@!fmt_fname(next(expnum))`` and ``set`` directives that jwst's own test
helpers expand into made-up names like ``jw_00001_uncal.fits``), or use the
pre-flight name format (``..._mirim_image_uncal.fits``); they are listed as
not comparable, with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

jwst = pytest.importorskip("jwst")
POOLS = Path(jwst.__file__).parent / "associations" / "tests" / "data"

# Rules calstream makes (steps.associations.level3_candidates._asn_rule).
SUPPORTED_RULES = frozenset({
    "Asn_Lv3Image", "Asn_Lv3ImageBackground", "Asn_Lv3TSO", "Asn_Lv3WFSCMB", "Asn_Lv3AMI",
    "Asn_Lv3NRCCoron", "Asn_Lv3MIRCoron", "Asn_Lv3NRCCoronImage", "Asn_Lv3MIRMRS",
    "Asn_Lv3MIRMRSBackground", "Asn_Lv3NRSIFU", "Asn_Lv3NRSIFUBackground", "Asn_Lv3SpecAux",
    "Asn_Lv3NRSFSS", "Asn_Lv3SpectralSource", "Asn_Lv3SpectralTarget",
    "Asn_Lv3SlitlessSpectral", "Asn_Lv3WFSSNRC", "Asn_Lv3WFSSNIS", "Asn_Lv3WFSSMIR",
})

# pool -> (only in jwst, only in calstream): every one explained in docs/design.md.
KNOWN_DIFFERENCES = {
    "pool_duplicate.csv": (
        # Its first row has no ASN_CANDIDATE: jwst only *discovers* it (acid
        # a3001); calstream takes the observation candidate from the name.
        {("a3001", "jw87600-a3001_t001_niriss_clearp-f430m",
          ("jw87600007001_02101_00001_nis",))},
        {("o007", "jw87600-o007_t001_niriss_clearp-f430m",
          ("jw87600007001_02101_00001_nis",))},
    ),
}

Candidate = tuple[str, str, tuple[str, ...]]  # acid, product name, member exposure ids


def _not_comparable(path: Path) -> str | None:
    text = path.read_text()
    if "@!" in text or any(line.startswith("set ") for line in text.splitlines()):
        return "a jwst template (made-up names, expanded by jwst's test helpers)"
    from calstream.steps.plans import PlanError, parse_pool

    try:
        parse_pool(text, source=path.name)
    except PlanError as exc:
        return f"not JWST file names: {str(exc)[:90]}"
    return None


def _stem(path: str) -> str:
    return Path(path).name.rsplit("_", 1)[0]


def calstream_candidates(path: Path) -> dict[Candidate, str]:
    from calstream.daemon.deciders.level3_state import keys_of
    from calstream.steps.associations import Exposure, product_name
    from calstream.steps.plans import parse_pool

    plan = parse_pool(path.read_text(), source=path.name)
    groups: dict = {}
    for planned in plan.exposures:
        exposure = Exposure(planned.exposure_id, dict(planned.header), {})
        others = tuple(a for a in planned.candidates if not a.startswith("o"))
        for key, _ in keys_of(exposure, others):
            groups.setdefault(key, []).append(exposure)
    return {(key.acid, product_name(key, members),
             tuple(sorted(m.exposure_id for m in members))): key.asn_rule
            for key, members in groups.items()}


def jwst_candidates(path: Path) -> dict[Candidate, str]:
    from jwst.associations import AssociationPool
    from jwst.associations.main import Main

    found = {}
    generator = Main.cli(["--dry-run"], pool=AssociationPool.read(str(path)))
    for asn in generator.associations:
        rule = asn["asn_rule"].split("_", 1)[1]  # candidate_/discover_ prefix
        if "Lv3" not in rule:
            continue
        for product in asn["products"]:
            members = tuple(sorted(_stem(m["expname"]) for m in product["members"]))
            found[(asn["asn_id"], product["name"], members)] = rule
    return found


ALL_POOLS = sorted(p.name for p in POOLS.glob("*.csv"))


def test_every_shipped_pool_is_compared_or_says_why_not():
    comparable = COMPARABLE
    assert {"jw00632_dups.csv", "jw09505_20251216t202003_pool.csv",
            "jw87800_20180412T163456_pool.csv", "pool_033_wfs_jitter.csv",
            "pool_duplicate.csv"} <= set(comparable)
    for name in sorted(set(ALL_POOLS) - set(comparable)):
        print(f"{name}: not compared: {_not_comparable(POOLS / name)}")


FIGURES: dict[str, tuple[int, int, int]] = {}


# Only the pools that can be compared are test cases (the test above says
# why each other one cannot): a case that can only skip proves nothing.
COMPARABLE = [p for p in ALL_POOLS if _not_comparable(POOLS / p) is None]


@pytest.mark.parametrize("pool", COMPARABLE)
def test_level3_candidates_equal_asn_generate(pool):
    theirs = {c: r for c, r in jwst_candidates(POOLS / pool).items() if r in SUPPORTED_RULES}
    ours = calstream_candidates(POOLS / pool)
    only_theirs, only_ours = set(theirs) - set(ours), set(ours) - set(theirs)
    equal = set(theirs) & set(ours)
    FIGURES[pool] = (len(theirs), len(equal), len(only_theirs) + len(only_ours))
    print(f"{pool}: jwst {len(theirs)}, calstream {len(ours)}, equal {len(equal)}, "
          f"only jwst {sorted(only_theirs)}, only calstream {sorted(only_ours)}")
    assert (only_theirs, only_ours) == KNOWN_DIFFERENCES.get(pool, (set(), set()))
    for candidate in equal:  # the same rule made it
        assert ours[candidate] == theirs[candidate], candidate
