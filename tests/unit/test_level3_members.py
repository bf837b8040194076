"""A stage-3 order is judged by its members' own headers (deciders/level3_members.py).

The orders here are the planner's own (build_level3 on synthetic headers as
jwst writes them); each member's "file" is its header, as a stage-2 cal
file carries its exposure's keywords. Before, nothing compared them: a
forged stage-2 product event (another FILTER) put an exposure into another
mosaic, and a forged stage-3 order could list any cal files of its program.
"""

from __future__ import annotations

import copy

import pytest

from calstream.daemon.deciders.level3_members import member_paths, members_problem
from calstream.steps.associations import Exposure, build_level3
from calstream.steps.routing import route
from calstream.steps.synthetic.headers import exposure_id, synthetic_header

STORE = "/store/01234/001"


def _exposure(instrument, exp_type, variant="default", **kw) -> Exposure:
    header = synthetic_header(instrument, exp_type, variant, **kw)
    eid = exposure_id(header)
    return Exposure(eid, header, {s: f"{STORE}/{eid}_{s}.fits"
                                  for s in ("cal", "calints", "x1d")})


def _order(members: list[Exposure], *, acid=None, route_of=None, expected_by="headers"):
    """The planner's order of ``members`` (level3_orders.stage3_order's fields
    the check reads), and each member file's own header."""
    r = route_of or route(members[0].header)
    asn = build_level3(r, members, acid=acid)
    science = next(e for e in sorted(members, key=lambda e: e.exposure_id)
                   if e.route.role == "science")
    order = {"pipeline": r.stage3, "association": asn, "header": dict(science.header),
             "exp_type": science.header["EXP_TYPE"], "instrument": science.header["INSTRUME"],
             "expected_by": expected_by, "exposure_id": None}
    by_path = {p: e for e in members for p in e.products.values()}
    return order, {p: dict(by_path[p].header) for p in member_paths(order)}


def _dithers(n=4, **kw) -> list[Exposure]:
    return [_exposure("NIRCAM", "NRC_IMAGE", EXPOSURE=f"{i:05d}", PATT_NUM=i,
                      PATTTYPE="4-POINT-DITHER", NUMDTHPT=n, NEXPOSUR=n, **kw)
            for i in range(1, n + 1)]


def _refused(order, own) -> str:
    verdict = members_problem(order, own)
    assert verdict is not None and verdict.action == "dead_letter"
    assert verdict.category == "invalid_message"
    return verdict.reason


def test_the_planner_s_orders_pass_by_their_members_own_headers():
    sci = _exposure("NIRCAM", "NRC_CORON")
    psf = _exposure("NIRCAM", "NRC_CORON", "psf", OBSERVTN="002", TARGETID=7)
    nods = [_exposure("MIRI", "MIR_LRS-FIXEDSLIT", EXPOSURE=f"{i:05d}", PATT_NUM=i)
            for i in (1, 2)]
    mrs = _exposure("MIRI", "MIR_MRS")
    mrs_bkg = _exposure("MIRI", "MIR_MRS", "background", OBSERVTN="002", TARGETID=9)
    full = [_exposure("NIRCAM", "NRC_CORON", "fullframe"),
            _exposure("NIRCAM", "NRC_CORON", "fullframe_unocculted")]
    orders = [_order(_dithers(SUBARRAY="SUB160")),
              _order([psf, sci], acid="c1001", expected_by="plan"),  # PSF of another target
              _order(nods),  # each nod's x1d listed as the others' background
              _order([mrs, mrs_bkg], acid="c1002", expected_by="plan"),
              _order(full, route_of=route(full[0].header).also),  # image3 of coronagraphy
              _order([_exposure("NIRISS", "NIS_AMI"),
                      _exposure("NIRISS", "NIS_AMI", IS_PSF=True, EXPOSURE="00002")])]
    for order, own in orders:
        assert members_problem(order, own) is None, order["association"]["products"][0]["name"]


def test_what_stage_2_rewrites_or_writes_otherwise_is_not_compared():
    order, own = _order(_dithers())
    for header in own.values():
        # A corrected exposure's cal file says CALCULATED where its event said
        # PLANNED; ids as numbers (tests/integration/test_integer_ids.py); counts.
        header.update(ENGQLPTG="CALCULATED", PROGRAM=1234, OBSERVTN=1, EXPOSURE=int(
            header["EXPOSURE"]), NGROUPS=9)
    order["header"]["ENGQLPTG"] = "PLANNED"
    assert members_problem(order, own) is None
    # A member not readable as FITS is the run's to judge.
    assert members_problem(order, dict.fromkeys(own)) is None


def test_a_member_whose_own_header_is_of_another_candidate_is_refused():
    # Its stage-2 product event said F150W (forged): the planner put the
    # F200W exposure into the F150W mosaic.
    order, own = _order(_dithers())
    own[next(reversed(own))]["FILTER"] = "F200W"
    reason = _refused(order, own)
    assert reason.startswith("its members are no level-3 candidate by their own headers: "
                             "members belong to 2 different level-3 candidates"), reason
    assert "opt_elem=F200W" in reason and "opt_elem=F150W" in reason


def test_a_forged_order_naming_cal_files_of_another_candidate_is_refused():
    # Any cal file of its program: another observation's, another target's,
    # a time series' (each the planner's own product, with its own header).
    for change in ({"OBSERVTN": "002"}, {"TARGETID": 5}, {"TSOVISIT": True, "NINTS": 20}):
        order, own = _order(_dithers())
        stranger = _exposure("NIRCAM", "NRC_IMAGE", EXPOSURE="00009", **change)
        order["association"]["products"][0]["members"][-1]["expname"] = \
            stranger.products["cal"]
        own = {p: own.get(p) or dict(stranger.header) for p in member_paths(order)}
        assert _refused(order, own).startswith(
            "its members are no level-3 candidate by their own headers: "), change


def test_an_association_that_is_not_its_members_candidate_is_refused():
    order, own = _order(_dithers())
    cases = {
        "another product name": ("products", "jw01234-o001_t001_nircam_clear-f200w"),
        "another observation candidate": ("asn_id", "o002"),
        "another rule": ("asn_rule", "Asn_Lv3ImageBackground"),
    }
    for how, (field, value) in cases.items():
        forged = copy.deepcopy(order)
        if field == "products":
            forged["association"]["products"][0]["name"] = value
        else:
            forged["association"][field] = value
        reason = _refused(forged, own)
        assert "its members' headers" in reason, (how, reason)
    # Every one of them the science file's own: another filter in the name.
    assert "clear-f150w" in _refused(
        {**order, "association": {**order["association"], "products": [
            {**order["association"]["products"][0],
             "name": "jw01234-o001_t001_nircam_clear-f200w"}]}}, own)


def test_a_member_listed_in_another_role_than_its_own_is_refused():
    sci = _exposure("NIRISS", "NIS_AMI")
    psf = _exposure("NIRISS", "NIS_AMI", IS_PSF=True, EXPOSURE="00002")
    order, own = _order([sci, psf])
    # The PSF reference's file says IS_PSF = F: it is science, not the calibrator.
    own[psf.products["calints"]]["IS_PSF"] = False
    assert "is listed as psf, its own header makes it science" in _refused(order, own)
    # A member type no planner's stage-3 order has.
    forged = copy.deepcopy(order)
    forged["association"]["products"][0]["members"][1]["exptype"] = "sourcecat"
    assert "sourcecat" in _refused(forged, own)


@pytest.mark.parametrize("change", [{"FILTER": "F444W"}, {"PUPIL": "F162M"},
                                    {"EXP_TYPE": "NRC_TSIMAGE"}, {"SUBARRAY": "SUB400P"}])
def test_a_header_copy_putting_its_science_exposure_elsewhere_is_refused(change):
    # The order's copy is what its product event carries (the planner matches
    # a WFSS grism to its direct image by it).
    order, own = _order(_dithers())
    order["header"].update(change)
    reason = _refused(order, own)
    assert reason.startswith("the order's header copy puts its science exposure "), reason
    assert "copy " in reason and "file " in reason, reason


def test_a_header_copy_of_no_science_member_or_another_exp_type_is_refused():
    order, own = _order(_dithers())
    assert "of none of its science members" in _refused(
        {**order, "header": {**order["header"], "EXPOSURE": "00009"}}, own)
    assert "exp_type: order 'NRC_CORON', file EXP_TYPE = 'NRC_IMAGE'" in _refused(
        {**order, "exp_type": "NRC_CORON"}, own)


def test_the_planner_refuses_a_stage_2_event_putting_its_exposure_in_another_candidate():
    # Before, the planner took the event's header as given: a forged stage-2
    # product event saying F200W put the F150W exposure into the F200W mosaic.
    from calstream.daemon.deciders.planner_state import PlannerState

    from .test_level3_state import T0, cal, dither, rate, stage3

    state = PlannerState(companion_wait=60.0, level3_settle=30.0, level3_quiet_period=600.0)
    for n in (1, 2):
        state.observe(rate(dither(n, nexp=2), T0 + n), T0 + n)  # its stage-2 orders
    forged = cal(dither(1, nexp=2, FILTER="F200W"), T0 + 3)
    [letter] = state.observe(forged, T0 + 3)
    assert (letter.topic, letter.message["stage"]) == ("deadletter", "planner")
    assert letter.message["reason"] == (
        "the stage-2 product event of jw01234001001_02101_00001_nrcb1 puts it in other level-3 "
        "candidates than its detector1 event did: opt_elem: stage-2 event 'F200W', detector1 "
        "event 'F150W'")
    assert "jw01234001001_02101_00001_nrcb1" not in state.stage3.calibrated
    # Its own event, with what stage 2 writes otherwise than the arrival
    # (a corrected pointing), is taken: the mosaic of both closes.
    assert not state.observe(cal(dither(1, nexp=2, ENGQLPTG="CALCULATED"), T0 + 4), T0 + 4)
    assert not state.observe(cal(dither(2, nexp=2), T0 + 5), T0 + 5)
    [order] = stage3(state.tick(T0 + 100))
    assert len(order["members"]) == 2
    # An event whose exposure's detector1 event is unseen has nothing to be held to.
    assert not [e for e in state.observe(cal(dither(3, nexp=2), T0 + 6), T0 + 6)
                if e.topic == "deadletter"]
