"""Level-3 names without TARGETID: numbered as jwst's asn_make_pool numbers them.

Uncal headers carry no TARGETID (it is a pool column); asn_make_pool gives
each file the count of distinct TARGNAMEs met so far, in the order of the
files. These tests run jwst's own mkpool + generate on the same headers.
"""

import pytest
from astropy.io import fits

from calstream.steps.associations import Exposure, build_level3, candidate_key, product_name
from calstream.steps.associations.level3_candidates import pool_target_ids, target_id
from calstream.steps.routing import route
from calstream.steps.synthetic.headers import exposure_id, synthetic_header


def _imaging(observation: str, number: int, target: str, **kw) -> Exposure:
    header = synthetic_header("NIRCAM", "NRC_IMAGE", **{
        "OBSERVTN": observation, "EXPOSURE": f"{number:05d}", "PATT_NUM": number,
        "NEXPOSUR": 2, "TARGETID": None, "TARGNAME": target, **kw})
    eid = exposure_id(header)
    return Exposure(eid, header, {"cal": f"{eid}_cal.fits"})


def _jwst_names(exposures: list[Exposure], where) -> dict[str, list[str]]:
    """jwst's level-3 product names -> member exposure ids, from asn_make_pool
    on the files (in file-name order, as a shell glob gives them)."""
    from jwst.associations import AssociationPool
    from jwst.associations.main import Main
    from jwst.associations.mkpool import mkpool

    files = []
    for e in sorted(exposures, key=lambda e: e.exposure_id):
        primary = fits.PrimaryHDU()
        for key, value in e.header.items():
            if value is not None:
                primary.header[key] = value
        files.append(where / f"{e.exposure_id}_uncal.fits")
        primary.writeto(files[-1])
    found = {}
    # asn_make_pool writes the pool file, asn_generate reads it (lower-casing
    # every value) and runs its candidates and discovery.
    mkpool([str(f) for f in files]).write(where / "pool.csv")
    pool = AssociationPool.read(where / "pool.csv")
    for asn in Main.cli(["--dry-run"], pool=pool).associations:
        # Discovered candidates (aNNNN) join observations; calstream makes
        # observation candidates only (a plan brings the others).
        if asn["asn_type"] == "image3" and asn["asn_id"].startswith("o"):
            product = asn["products"][0]
            found[product["name"]] = sorted(
                m["expname"].rsplit("/", 1)[-1].rsplit("_", 1)[0] for m in product["members"])
    return found


def _calstream_names(exposures: list[Exposure], pool=()) -> dict[str, list[str]]:
    groups: dict = {}
    for e in exposures:
        groups.setdefault(candidate_key(route(e.header), e), []).append(e)
    return {product_name(k, ms, pool): sorted(m.exposure_id for m in ms)
            for k, ms in groups.items()}


def test_one_target_is_t001_as_asn_make_pool_gives(tmp_path):
    exposures = [_imaging("001", i, "NGC 6543") for i in (1, 2)]
    ours = _calstream_names(exposures)
    assert list(ours) == ["jw01234-o001_t001_nircam_clear-f150w"]
    assert ours == _jwst_names(exposures, tmp_path)
    asn = build_level3(route(exposures[0].header), exposures)
    assert asn["target"] == "1"
    assert asn["products"][0]["name"] == "jw01234-o001_t001_nircam_clear-f150w"


def test_targets_are_numbered_in_file_order_across_the_program(tmp_path):
    exposures = [_imaging("001", i, "NGC 6543") for i in (1, 2)]
    exposures += [_imaging("002", i, "M 31") for i in (1, 2)]
    # Without the rest of the program a candidate only knows its own target...
    assert set(_calstream_names(exposures)) == {
        "jw01234-o001_t001_nircam_clear-f150w", "jw01234-o002_t001_nircam_clear-f150w"}
    # ...with the program's exposures (the files asn_make_pool is given) it
    # numbers them as jwst does.
    ours = _calstream_names(exposures, pool=exposures)
    assert set(ours) == {"jw01234-o001_t001_nircam_clear-f150w",
                         "jw01234-o002_t002_nircam_clear-f150w"}
    assert ours == _jwst_names(exposures, tmp_path)


def test_two_targets_in_one_observation_are_two_candidates(tmp_path):
    exposures = [_imaging("001", 1, "NGC 6543"), _imaging("001", 2, "M 31")]
    assert len({candidate_key(route(e.header), e) for e in exposures}) == 2
    assert _calstream_names(exposures, pool=exposures) == _jwst_names(exposures, tmp_path)


def test_asn_make_pool_quirk_a_name_met_again_takes_the_running_count(tmp_path):
    exposures = [_imaging("001", 1, "A"), _imaging("002", 1, "B"), _imaging("003", 1, "A")]
    assert pool_target_ids(exposures) == {e.exposure_id: n for e, n in zip(exposures, "122", strict=True)}
    assert _calstream_names(exposures, pool=exposures) == _jwst_names(exposures, tmp_path)


@pytest.mark.parametrize("targetid", [7, "007"])
def test_a_header_or_plan_targetid_still_wins(targetid):
    exposures = [_imaging("001", i, "NGC 6543", TARGETID=targetid) for i in (1, 2)]
    key = candidate_key(route(exposures[0].header), exposures[0])
    assert target_id(key, exposures, pool=exposures) == str(targetid)
    assert product_name(key, exposures) == "jw01234-o001_t007_nircam_clear-f150w"
    # A plan's candidate (no target in the key) takes the science's TARGETID.
    planned = candidate_key(route(exposures[0].header), exposures[0], acid="c1000")
    assert planned.target is None
    assert product_name(planned, exposures) == "jw01234-c1000_t007_nircam_clear-f150w"


def test_the_planner_names_a_two_target_program_as_asn_generate(tmp_path):
    """The daemon's level-3 names, without a plan: the planner numbers targets
    over the program's exposures it has seen, as asn_make_pool over its files,
    whatever order they arrive in (observation 002's, M 31, first)."""
    from .test_level3_state import SETTLE, T0, feed, new_state, stage3

    headers = [synthetic_header("NIRCAM", "NRC_IMAGE", OBSERVTN=obs, EXPOSURE=f"{n:05d}",
                                PATT_NUM=n, NEXPOSUR=2, SUBARRAY="SUB160P", TARGETID=None,
                                TARGNAME=target)
               for obs, target in (("002", "M 31"), ("001", "NGC 6543")) for n in (1, 2)]
    state = new_state()
    orders = []
    for i, header in enumerate(headers):
        orders += feed(state, header, T0 + 10 * i)
    orders += stage3(state.tick(T0 + 100 + SETTLE))
    ours = {o["product_name"]: sorted(o["members"]) for o in orders}
    exposures = [Exposure(exposure_id(h), h, {"cal": f"{exposure_id(h)}_cal.fits"})
                 for h in headers]
    assert ours == _jwst_names(exposures, tmp_path)
    assert set(ours) == {"jw01234-o001_t001_nircam_clear-f150w-sub160p",
                         "jw01234-o002_t002_nircam_clear-f150w-sub160p"}
