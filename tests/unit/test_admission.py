"""Admission of a stage's record, and the retry policy: pure rules, no broker."""

from pathlib import Path

import pytest

from calstream.daemon.deciders import admission
from calstream.daemon.deciders.admission import FileFacts, Roots
from calstream.daemon.deciders.retry_policy import HANDLER_BACKOFF, Backoff, after_run
from calstream.daemon.operations.config import Config
from calstream.daemon.stages import STAGES, by_live_topic, stage, stage_config

EID = "jw01234001001_02101_00001_nrcb1"
INBOX = Path("/data/inbox")
ROOTS = Roots([INBOX], [INBOX])


def arrival(path=f"/data/inbox/{EID}_uncal.fits", **extra):
    return {"exposure_id": EID, "path": path, "digest": "d1", **extra}


def facts(path, is_file=True, resolved=None):
    return FileFacts(Path(path), Path(resolved or path), is_file)


def test_an_arrival_inside_the_roots_is_run_unless_its_file_changed():
    a = arrival()
    assert admission.arrival_problem(a, facts(a["path"]), ROOTS) is None
    assert admission.arrival_staleness(a, "d1").action == "run"
    assert admission.arrival_staleness(a, "d2").action == "stale"


def test_bad_arrivals_are_dead_lettered_as_bad_input():
    outside = arrival(path=f"/etc/{EID}_uncal.fits")
    v = admission.arrival_problem(outside, facts(outside["path"]), ROOTS)
    assert v.action == "dead_letter" and v.category == "bad_input"
    assert "outside the allowed roots (/data/inbox)" in v.reason
    assert v.fields == {"exposure_id": EID, "path": outside["path"], "digest": "d1"}
    # A symlink in the inbox pointing elsewhere is outside too.
    a = arrival()
    assert admission.arrival_problem(a, facts(a["path"], resolved="/etc/x"), ROOTS)
    assert "does not exist" in admission.arrival_problem(a, facts(a["path"], False), ROOTS).reason
    relative = arrival(path=f"{EID}_uncal.fits")
    assert "not absolute" in admission.arrival_problem(relative, facts(relative["path"]),
                                                       ROOTS).reason
    other = arrival(path="/data/inbox/jw01234001001_02101_00002_nrcb1_uncal.fits")
    assert "does not match" in admission.arrival_problem(other, facts(other["path"]),
                                                         ROOTS).reason
    replayed = arrival(replay={"namespace": "live"})
    assert "replay request" in admission.arrival_problem(replayed, facts(replayed["path"]),
                                                         ROOTS).reason


def test_replay_requests_need_a_namespace_of_their_own_and_a_pmap():
    assert admission.replay_problem({"namespace": "ctx1535", "crds_context": "jwst_1.pmap"}) \
        is None
    assert admission.replay_problem({}) == "replay request without a namespace"
    assert admission.replay_problem({"namespace": "live"})
    assert "pmap" in admission.replay_problem({"namespace": "n1", "crds_context": "jwst_1"})


RATE = f"/p/01234/001/{EID}_rate.fits"
ASN = {"asn_id": "o001", "program": "01234", "version_id": "20260101t000000",
       "asn_type": "image2", "asn_rule": "candidate_Asn_Lv2Image", "asn_pool": "pool",
       "code_version": "calstream", "degraded_status": "No known degraded exposures",
       "constraints": "calstream: one science exposure", "products": [
           {"name": EID, "members": [{"expname": RATE, "exptype": "science"}]}]}


def order(**extra):
    """A stage-2 order as the planner makes it (level2_orders.stage2_order)."""
    return {"stage": "stage2", "pipeline": "calwebb_image2", "exposure_id": EID,
            "product_name": EID, "program": "01234", "observation": "001", "association": ASN,
            "association_path": "jw01234-o001_20260101t000000_image2_06000_asn.json",
            "inputs": [{"path": RATE, "digest": "d1"}], **extra}


PRODUCTS = Roots([Path("/p")], [Path("/p")])


def test_a_work_order_is_run_on_its_own_stage_from_store_inputs():
    o = order()
    inputs = [facts(RATE)]
    assert admission.work_order_problem(o, "stage2", ["live"], inputs, PRODUCTS) is None
    assert admission.work_order_staleness(o, ["d1"]).action == "run"
    stale = admission.work_order_staleness(o, ["d9"])
    assert stale.action == "stale" and f"{EID}_rate.fits changed" in stale.reason
    wrong = admission.work_order_problem(o, "stage3", ["live"], inputs, PRODUCTS)
    assert wrong.category == "invalid_message" and "on the stage3 topic" in wrong.reason
    outside = admission.work_order_problem(o, "stage2", ["live"], [facts(f"/tmp/{EID}_rate.fits")],
                                           PRODUCTS)
    assert outside.category == "bad_input" and "outside the product store /p" in outside.reason
    assert outside.fields == {"exposure_id": EID}


def test_a_namespace_never_feeds_another_or_the_live_products():
    inputs = [facts(f"/p/namespaces/n1/01234/001/{EID}_rate.fits")]
    v = admission.work_order_problem(order(), "stage2", ["n1"], inputs, PRODUCTS)
    assert v and "from namespace 'n1'" in v.reason
    replay = {"namespace": "n2"}
    v = admission.work_order_problem(order(namespace="n1", replay=replay), "stage2", ["live"],
                                     [facts(RATE)], PRODUCTS)
    assert v and "carries a replay into 'n2'" in v.reason


def test_retries_back_off_until_the_attempts_are_spent():
    backoff = Backoff(2.0)
    assert after_run("success", 1, max_attempts=3, backoff=backoff).action == "publish"
    assert after_run("skipped", 1, max_attempts=3, backoff=backoff).action == "publish_skipped"
    first = after_run("transient", 1, max_attempts=3, backoff=backoff)
    second = after_run("transient", 2, max_attempts=3, backoff=backoff)
    assert (first.action, first.delay, second.delay) == ("retry", 2.0, 4.0)
    spent = after_run("transient", 3, max_attempts=3, backoff=backoff)
    assert (spent.action, spent.category) == ("dead_letter", "retries_exhausted")
    assert after_run("permanent", 1, max_attempts=3, backoff=backoff).category == \
        "permanent_failure"
    assert [HANDLER_BACKOFF.delay(n) for n in (1, 2, 7, 30)] == [1.0, 2.0, 60.0, 60.0]


def test_the_stage_table_wires_each_stage_once():
    assert [s.name for s in STAGES] == ["detector1", "stage2", "stage3"]
    assert by_live_topic("work.stage3").replay_topic == "work.stage3.replay"
    assert by_live_topic("products") is None
    assert stage("stage2").group("calstream") == "calstream.stage2"

    cfg = Config(task_timeout=60.0, stage3_task_timeout=600.0)
    assert stage_config(stage("stage2"), cfg) is cfg
    s3 = stage_config(stage("stage3"), cfg)
    assert (s3.workers, s3.max_tasks_per_worker, s3.task_timeout, s3.worker_rss_limit_mb) == \
        (1, 10, 600.0, 6144)


def _asn(**changes):
    asn = {**ASN, "products": [dict(ASN["products"][0])]}
    asn.update(changes)
    return asn


@pytest.mark.parametrize("changes,reason", [
    ({"pipeline": "calwebb_evil"}, "unknown pipeline"),
    ({"observation": "../x"}, "not 3 digits"),
    ({"association_path": "../../etc/x_asn.json"}, "not a plain file name"),
    ({"association": _asn(products=[])}, "has no products"),
    ({"association": _asn(asn_id="../../x")}, "cannot be file names"),
    ({"association": _asn(products=[{"name": "/tmp/x", "members": []}])}, "cannot be file names"),
    ({"association": _asn(products=[{"name": EID, "members": []}])}, "has no members"),
    ({"association": _asn(products=[{"name": EID, "members": [
        {"expname": "/etc/passwd", "exptype": "science"}]}])}, "is not one of the order's inputs"),
    # door fuzz seed 5: its schema's "integer" takes 1e300, whose int() named a claim file
    # of 300 digits (OSError: File name too long, out of the stage's handler)
    ({"version": 1e300}, "is not a whole number of 1 to 30 digits"),
    ({"version": 10**30}, "is not a whole number of 1 to 30 digits"),
    ({"version": 1.5}, "is not a whole number of 1 to 30 digits"),
    ({"version": 0}, "is not a whole number of 1 to 30 digits"),
    # The run takes it: a live order runs with the daemon's context.
    ({"crds_context": "jwst_0002.pmap"}, "is not its replay's (None)"),
    ({"crds_context": "jwst_0002.pmap", "namespace": "n1",
      "replay": {"namespace": "n1", "crds_context": "jwst_0003.pmap"}}, "is not its replay's"),
])
def test_a_work_order_runs_only_what_it_names_as_inputs(changes, reason):
    v = admission.work_order_problem(order(**changes), "stage2", ["live"],
                                     [facts(RATE)], PRODUCTS)
    assert v is not None and reason in v.reason


OTHER = "jw01234001001_02101_00002_nrcb1"
OTHER_RATE = f"/p/01234/001/{OTHER}_rate.fits"


@pytest.mark.parametrize("changes,reason", [
    # jwst names the products after the association's product: this order's
    # run would have written OTHER_cal.fits over the other exposure's.
    ({"association": _asn(products=[{"name": OTHER, "members": [
        {"expname": RATE, "exptype": "science"}]}])}, "should be 'jw01234001001_02101_00001"),
    ({"association": _asn(products=[{"name": OTHER, "members": [
        {"expname": OTHER_RATE, "exptype": "science"}]}]),
      "inputs": [{"path": OTHER_RATE, "digest": "d1"}]}, "are not the order's product"),
    ({"association": _asn(products=[ASN["products"][0], {"name": OTHER, "members": [
        {"expname": RATE, "exptype": "science"}]}])}, "has one product, this has 2"),
    ({"association": _asn(products=[{"name": EID, "members": [
        {"expname": RATE, "exptype": "background"}]}])}, "exactly one science member"),
    ({"association_path": "jw01234-o001_20260101t000000_image2_06001_asn.json"},
     "is not the association's name"),
    ({"exposure_id": OTHER}, "is not product"),
    ({"exposure_id": None}, "is not product"),
    ({"observation": "002"}, "but the product is '01234', '001'"),
    ({"program": "09999"}, "association of program '01234', order of '09999'"),
])
def test_a_work_order_writes_only_its_own_product(changes, reason):
    inputs = [facts(i["path"]) for i in changes.get("inputs", order()["inputs"])]
    v = admission.work_order_problem(order(**changes), "stage2", ["live"], inputs, PRODUCTS)
    assert v is not None and v.category == "bad_input" and reason in v.reason, v


def test_a_version_written_as_a_whole_float_is_a_version():
    assert admission.work_order_problem(order(version=2.0), "stage2", ["live"],
                                        [facts(RATE)], PRODUCTS) is None


HEADER = {"ENGQLPTG": "PLANNED", "NGROUPS": 5}


@pytest.mark.parametrize("changes,reason", [
    ({"header": {**HEADER, "ENGQLPTG": "CALCULATED"}}, "ENGQLPTG: message 'CALCULATED'"),
    ({"header": {**HEADER, "EXTRA": 1}}, "EXTRA: message 1, file None"),
    ({"size": -1}, "says -1 bytes"),
    ({"priority": "replay"}, "without its replay"),
    ({"source": "replay"}, "without its replay"),
])
def test_the_file_not_the_arrival_says_what_the_exposure_is(changes, reason):
    exposure = admission.ExposureFacts(HEADER, 2880)
    assert admission.arrival_claims_problem(arrival(header=HEADER, size=2880), exposure,
                                            False) is None
    v = admission.arrival_claims_problem(arrival(**{"header": HEADER, "size": 2880, **changes}),
                                         exposure, False)
    assert v is not None and reason in v.reason


def test_replay_topic_records_and_unreadable_files_are_refused():
    exposure = admission.ExposureFacts(HEADER, 2880)
    a = arrival(header=HEADER, size=2880)
    assert "without its replay" in admission.arrival_claims_problem(a, exposure, True).reason
    broken = admission.ExposureFacts({}, -1, "NGROUPS = 0 is outside 1..65535")
    v = admission.arrival_claims_problem(a, broken, False)
    assert v.category == "bad_input" and "NGROUPS = 0" in v.reason


def test_a_stage_2_order_s_header_copy_is_judged_by_its_file_s_own():
    from calstream.daemon.deciders.order_header import header_copy_problem, science_member

    own = {"EXP_TYPE": "NRC_IMAGE", "INSTRUME": "NIRCAM", "FILTER": "F150W"}
    o = order(header=dict(own), exp_type="NRC_IMAGE", instrument="NIRCAM")
    assert science_member(o) == RATE
    assert header_copy_problem(o, own) is None
    assert header_copy_problem(order(header={"FILTER": "F150W"}), own) is None  # a part of it
    assert header_copy_problem(o, None) is None  # no FITS: the run judges the file
    v = header_copy_problem(order(header={**own, "FILTER": "F444W"}), own)
    assert v.category == "invalid_message" and "FILTER: order 'F444W', file 'F150W'" in v.reason
    v = header_copy_problem(order(header=own, instrument="MIRI"), own)
    assert "instrument: order 'MIRI', file INSTRUME = 'NIRCAM'" in v.reason
    assert "no header copy" in header_copy_problem(order(), own).reason


def test_ids_a_file_writes_as_numbers_are_the_copy_s_ids():
    # An uncal file may write its ids as numbers (EXPOSURE = 1; the door
    # makes them the name's text, '00001', in the copy), and jwst writes
    # the uncal file's own value into the rate file: '1'. The stage must
    # not refuse the planner's order for that, and the product event keeps
    # the name's text, which the planner holds an exposure's header to.
    from calstream.daemon.deciders.order_header import carried_header, header_copy_problem

    copy = {"PROGRAM": "01234", "EXPOSURE": "00001", "FILTER": "F150W", "NGROUPS": 5}
    own = {"PROGRAM": "1234", "EXPOSURE": "1", "FILTER": "F150W", "NGROUPS": 5,
           "EXP_TYPE": "NRC_IMAGE"}
    o = order(header=copy)
    assert header_copy_problem(o, own) is None
    assert carried_header(o, own) == {**own, "PROGRAM": "01234", "EXPOSURE": "00001"}
    assert header_copy_problem(o, {**own, "EXPOSURE": 1}) is None
    # Another id, another number; and only the name's ids are read as numbers.
    v = header_copy_problem(o, {**own, "EXPOSURE": "2"})
    assert "EXPOSURE: order '00001', file '2'" in v.reason
    assert header_copy_problem(order(header={**copy, "EXPOSURE": "1a"}), own) is not None
    assert header_copy_problem(order(header={**copy, "NGROUPS": "5"}), own) is not None
