"""Schema-valid but impossible product events are named, not trusted."""

import pytest

from calstream.daemon.deciders.event_checks import EventIds, inside, product_event_problems
from calstream.steps.synthetic.headers import synthetic_header

STORE = "/data/products"
INBOX = "/data/inbox"
EID = "jw01234001001_02101_00001_nrcb1"
HEADER = synthetic_header("NIRCAM", "NRC_IMAGE", PROGRAM="01234", OBSERVTN="001", VISIT="001",
                          EXPOSURE="00001")


def event(**changes):
    body = {"stage": "detector1", "outcome": "success", "program": "01234", "observation": "001",
            "product_name": EID, "exposure_id": EID, "namespace": "live", "replay": None,
            "header": dict(HEADER), "pointing_quality": HEADER["ENGQLPTG"],
            "inputs": [{"path": f"{INBOX}/{EID}_uncal.fits", "digest": "sha256:" + "0" * 64}],
            "outputs": [{"path": f"{STORE}/01234/001/{EID}_rate.fits", "suffix": "rate"}]}
    body.update(changes)
    return body


def problems(**changes):
    return product_event_problems(event(**changes), products_root=STORE, input_roots=[INBOX])


def test_a_true_event_has_no_problems():
    assert problems() == []
    level2_inputs = [{"path": f"{STORE}/01234/001/{EID}_rate.fits", "digest": "x"}]
    assert problems(stage="stage2", inputs=level2_inputs) == []
    ns = {"replay_id": "0" * 16, "namespace": "ctx2"}
    assert problems(namespace="ctx2", replay=ns, outputs=[
        {"path": f"{STORE}/namespaces/ctx2/01234/001/{EID}_rate.fits", "suffix": "rate"}]) == []
    assert problems(stage="stage3", product_name="jw01234-o001_t001_nircam_clear-f150w",
                    exposure_id=None, inputs=level2_inputs) == []


@pytest.mark.parametrize("changes,reason", [
    ({"inputs": []}, "no inputs"),
    ({"outputs": []}, "no outputs"),
    ({"outputs": [{"path": "/etc/passwd"}]}, "outside /data/products"),
    ({"outputs": [{"path": f"{STORE}/01234/../../../etc/passwd"}]}, "outside"),
    ({"outputs": [{"path": "products/01234/x.fits"}]}, "outside"),
    ({"inputs": [{"path": "/etc/shadow"}]}, "input '/etc/shadow' is outside"),
    # Paths no file can have: the stage the planner sends them to could not look them up.
    ({"outputs": [{"path": f"{STORE}/01234/001/a\x00b_rate.fits"}]}, "output: path"),
    ({"outputs": [{"path": f"{STORE}/01234/001/{'a' * 256}_rate.fits"}]}, "name of 266 bytes"),
    ({"inputs": [{"path": f"{INBOX}/\ud800/{EID}_uncal.fits"}]}, "lone surrogate"),
    ({"inputs": [{"path": INBOX + "/x" * 2100}]}, "longer than the file system allows"),
    ({"namespace": "evil"}, "without a replay"),
    ({"namespace": "evil", "replay": {"namespace": "other"}}, "without a replay"),
    ({"replay": {"namespace": "x"}}, "in the live namespace"),
    ({"exposure_id": "jw01234001001_02101_00088_nrcb1"}, "is not product_name"),
    ({"program": "09999"}, "program '09999' but the name says '01234'"),
    ({"observation": "002"}, "observation"),
    ({"product_name": "jw0", "exposure_id": "jw0"}, "not a JWST exposure name"),
    ({"stage": "stage3", "product_name": "jw09999-o001_t001_x"}, "is not program"),
    # Its schema's "integer" takes 1e300: the planner's next order would carry a
    # version no stage takes, and its snapshot one its own check refuses.
    ({"stage": "stage3", "product_name": "jw01234-o001_t001_nircam_clear-f150w",
      "exposure_id": None, "version": 1e300}, "version 1e+300 is not a whole number"),
])
def test_impossible_events_are_named(changes, reason):
    assert reason in "; ".join(problems(**changes))


@pytest.mark.parametrize("changes,reason", [
    # What no file passes the door with: each failed the planner's later
    # decisions for the whole visit (a mutation fuzz found them), and
    # NEXPOSUR = 10**18 made its completeness list that many exposures.
    ({"NEXPOSUR": 10**18}, "NEXPOSUR = 1000000000000000000 is outside 1..100000"),
    ({"NEXPOSUR": "PLANNED"}, "NEXPOSUR = 'PLANNED' is not an integer"),
    ({"EXSEGTOT": 10**9}, "EXSEGTOT = 1000000000 is outside"),
    ({"TIME-OBS": "N/A"}, "TIME-OBS = 'N/A' is not hh:mm:ss"),
    ({"DATE-OBS": "PLANNED"}, "DATE-OBS = 'PLANNED' is not an ISO date"),
    ({"FILTER": {"a": 1}}, "header value(s) of FILTER are not FITS values"),
    ({"PUPIL": ["CLEAR"]}, "header value(s) of PUPIL are not FITS values"),
    ({"EXP_TYPE": None}, "without required keyword(s) EXP_TYPE"),
    ({"OBSERVTN": "/PRODUCTS/../ETC"}, "OBSERVTN = '/PRODUCTS/../ETC' but the name says '001'"),
    ({"DETECTOR": "NRCA1"}, "DETECTOR = 'NRCA1' but the name says 'nrcb1'"),
])
def test_a_header_no_file_could_have_is_named(changes, reason):
    assert reason in "; ".join(problems(header={**HEADER, **changes}))


def test_what_the_planner_reads_of_a_success_must_be_there():
    assert "without the exposure's header" in "; ".join(problems(header=None))
    assert "without the exposure's header" in "; ".join(problems(header="x"))
    unnamed = [{"path": f"{STORE}/01234/001/{EID}_rate.fits"}]
    assert "output(s) without a suffix" in "; ".join(problems(outputs=unnamed))
    # A skipped run carries no products to decide on: its header is not read.
    assert problems(outcome="skipped", header=None, outputs=[]) == []


def test_outputs_of_a_namespace_stay_in_its_tree():
    ns = {"replay_id": "0" * 16, "namespace": "ctx2"}
    assert "outside /data/products/namespaces/ctx2" in "; ".join(problems(namespace="ctx2",
                                                                       replay=ns))


def test_inside_judges_text_only():
    assert inside("/a/b/c", ["/a"]) and not inside("/a/../b", ["/a"])
    assert not inside("/ab/c", ["/a"]) and not inside("a/b", ["/a"])


def test_an_event_id_stands_for_one_content_only_when_and_by_whom_may_change():
    ids = EventIds(capacity=2)
    a = event(emitted_at="t1", producer={"host": "x"})
    assert ids.consistent("e1", a)
    assert ids.consistent("e1", event(emitted_at="t2", producer={"host": "y"}))  # re-emitted
    assert not ids.consistent("e1", event(outputs=[]))
    ids.consistent("e2", a)
    ids.consistent("e3", a)  # e1 forgotten: bounded memory
    assert ids.consistent("e1", event(outputs=[]))


def test_inside_as_text_agrees_with_the_path_parts():
    from pathlib import PurePosixPath

    from calstream.daemon.deciders.event_checks import inside

    roots = ["/products", "/inbox/", "/", "/a/b", "//products", "/products/./x", "relative"]
    paths = ["/products", "/products/x", "/productsx/y", "/products/../etc", "/inbox/a.fits",
             "//products/x", "/products//x", "/products/./x", "/products/.hidden", "x/y",
             "/a/b/c", "/a/bc", "/a/b/", "/a/b/.", "", "/"]
    for root in roots:
        for path in paths:
            p = PurePosixPath(path)
            expected = p.is_absolute() and ".." not in p.parts and \
                p.is_relative_to(PurePosixPath(root))
            assert inside(path, [root]) == expected, (path, root)


def test_a_file_products_pointing_quality_is_its_headers():
    """The hold reads pointing_quality; for a product made from an uncal file
    it is that file's ENGQLPTG, which the event's header copies. A stage-2
    product's may be a correction's, so it is not compared."""
    planned = {**HEADER, "ENGQLPTG": "PLANNED"}
    assert problems(header=planned, pointing_quality="PLANNED") == []
    [reason] = problems(header=planned, pointing_quality="CALCULATED_TRACK_TR_202111")
    assert reason == ("pointing_quality 'CALCULATED_TRACK_TR_202111' but the header says "
                      "ENGQLPTG = 'PLANNED'")
    level2_inputs = [{"path": f"{STORE}/01234/001/{EID}_rate.fits", "digest": "x"}]
    assert problems(stage="stage2", inputs=level2_inputs, header=planned,
                    pointing_quality="CALCULATED_TRACK_TR_202111") == []


def _with_swapped_types(header):
    """``header`` with NINTS = 1 and TSOVISIT = True, and the same again with
    the two keywords in the other order and their values swapped: equal by
    ``==`` (1 == True), and their values' types in the same order."""
    rest = {k: v for k, v in header.items() if k not in ("NINTS", "TSOVISIT")}
    return {**rest, "NINTS": 1, "TSOVISIT": True}, {**rest, "TSOVISIT": 1, "NINTS": True}


@pytest.mark.parametrize("variant", ["bool for an int", "float for an int", "swapped"])
def test_a_copy_equal_but_not_identical_to_a_clean_one_is_judged_again(variant):
    # A stage-2 event's header is judged once its exposure's clean copy
    # was seen (session 44): only an identical copy takes that answer.
    from calstream.steps.exposure import header_copy_problems
    from calstream.steps.naming import parse_exposure_name

    clean, forged = {
        "bool for an int": (dict(HEADER), {**HEADER, "NINTS": True}),
        "float for an int": (dict(HEADER), {**HEADER, "NGROUPS": 5.0}),
        "swapped": _with_swapped_types(HEADER),
    }[variant]
    assert clean == forged and problems(header=clean) == []
    level2_inputs = [{"path": f"{STORE}/01234/001/{EID}_rate.fits", "digest": "x"}]
    found = problems(stage="stage2", inputs=level2_inputs, header=forged)
    assert found == header_copy_problems(parse_exposure_name(EID), forged) != []


def test_an_identical_copy_of_a_clean_header_is_judged_once(monkeypatch):
    from calstream.daemon.deciders import event_checks

    judged = []
    rules = event_checks.header_copy_problems
    monkeypatch.setattr(event_checks, "header_copy_problems",
                        lambda name, header: judged.append(name) or rules(name, header))
    name = "jw01234001001_02101_00002_nrcb1"
    header = {**HEADER, "EXPOSURE": "00002"}
    level2_inputs = [{"path": f"{STORE}/01234/001/{name}_rate.fits", "digest": "x"}]
    outputs = [{"path": f"{STORE}/01234/001/{name}_cal.fits", "suffix": "cal"}]
    assert problems(product_name=name, exposure_id=name, header=dict(header)) == []
    assert problems(stage="stage2", product_name=name, exposure_id=name, inputs=level2_inputs,
                    outputs=outputs, header=dict(header)) == []  # a copy, as decoded
    assert len(judged) == 1
    # A copy that differs is judged, and refused, as before.
    assert "NGROUPS = 0 is outside" in "; ".join(problems(
        stage="stage2", product_name=name, exposure_id=name, inputs=level2_inputs,
        outputs=outputs, header={**header, "NGROUPS": 0}))
    assert len(judged) == 2
