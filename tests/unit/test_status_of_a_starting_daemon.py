"""What `calstream status` says of a daemon that is still starting (waiting
for CRDS, its disk or its broker): what it waits for, and no claim that the
planner role is absent or that versions are unknown for another reason."""

from calstream.daemon.operations.status_render import render
from calstream.daemon.operations.status_summary import (
    BrokerView,
    Endpoint,
    Status,
    summarise_parked,
    summarise_planner,
)

WAITING = "starting: waiting for CRDS (crds_unreachable) since 2026-12-04T03:00:00Z, 9s"


def test_a_daemon_waiting_for_crds_is_shown_starting_with_what_it_waits_for():
    # What such a daemon serves: no build info yet (its CRDS context is not
    # known), one start step parked, /planner without a planner yet.
    daemon = Endpoint("http://127.0.0.1:9310", reachable=True, ready=False, problems=[WAITING],
                      samples=[("calstream_parked_items", {"stage": "start",
                                                           "cause": "crds_unreachable"}, 1.0),
                               ("calstream_held_exposures", {}, 0.0)],
                      planner={"caught_up": False})
    broker = BrokerView("127.0.0.1:9092", error="KafkaConnectionError: Unable to bootstrap")
    shown = render(Status(0.0, "calstream.", "calstream", [daemon], {}, broker,
                          summarise_planner([daemon]), summarise_parked([daemon])))
    lines = shown.splitlines()
    assert "  http://127.0.0.1:9310  NOT READY  starting (CRDS context not resolved yet)" in lines
    assert f"      problem: {WAITING}" in lines
    assert "  start: 1 item(s), crds_unreachable: restore the CRDS server or mount the " \
           "CRDS_PATH cache" in lines
    assert any(line.startswith("  (a daemon above is still starting") for line in lines)
    # It runs the planner role: not "no daemon given runs the planner role".
    assert "  open associations: not reported yet (the planner starts, or catches up with " \
           "its history)" in lines
    assert "  missing exposures: not reported yet (the planner starts, or catches up with " \
           "its history)" in lines
    assert "calstream ?" not in shown and "no daemon given runs the planner" not in shown


def test_hold_and_missing_ages_read_as_the_other_ages():
    """A hold of a minute read "oldest 0.0 h", and a missing exposure's age too."""
    from calstream.daemon.operations import status_render

    lines = status_render._planner_metrics({"held": 1, "oldest_hold_age_seconds": 63.0,
                                            "open_associations": {"stage2": 1}})
    assert lines[0] == ("  held exposures (planner metrics): 1 for pointing (the oldest for "
                        "63s), 0 WFSS grism(s) for their direct image")
    assert "oldest" not in status_render._planner_metrics(
        {"held": 0, "open_associations": {}})[0]
    missing = status_render._missing({"missing": {"jw1": {"since": 1.0, "candidates": ["c"]}},
                                      "oldest_missing_age": 3 * 3600.0}, "", 1 + 3 * 3600.0)
    assert missing[0] == "  missing exposures: 1, the oldest for 3.0h"
    assert missing[1] == "    jw1  expected since 3.0h ago by c"


def test_a_planner_behind_says_how_many_records_it_has_left():
    """/planner's "behind" (the records of its topics not decided yet, measured
    while it catches up too) is a line of its own where any are left."""
    def shown(view):
        daemon = Endpoint("http://127.0.0.1:9310", reachable=True, ready=True, problems=[],
                          samples=[], planner=view)
        return render(Status(0.0, "calstream.", "calstream", [daemon], {},
                             BrokerView("127.0.0.1:9092"), summarise_planner([daemon]),
                             summarise_parked([daemon]))).splitlines()

    catching_up = shown({"caught_up": False, "behind": {"calstream.products": 1200,
                                                         "calstream.plans": 0}})
    assert "  planner behind: 1200 record(s) of calstream.products" in catching_up
    assert catching_up.index("  planner behind: 1200 record(s) of calstream.products") + 1 \
        == catching_up.index("  missing exposures: not reported yet (the planner starts, "
                             "or catches up with its history)")
    caught_up = shown({"caught_up": True, "namespaces": {}, "behind": {
        "calstream.products": 0, "calstream.pointing": 3}})
    assert "  planner behind: 3 record(s) of calstream.pointing" in caught_up
    for nothing_left in ({"calstream.products": 0}, {}, None, {"x": "many"}, ["calstream.x"]):
        lines = shown({"caught_up": True, "namespaces": {}, "behind": nothing_left})
        assert not any("behind" in line for line in lines), nothing_left


def test_a_planner_view_of_another_shape_is_one_line_not_a_traceback():
    """/planner is what a daemon serves: one of another version (or whatever
    answers at a --metrics-url) with another shape raised out of `calstream
    status` (a view that was no object, a namespace that was no table)."""
    def shown(view):
        daemon = Endpoint("http://127.0.0.1:9310", reachable=True, ready=True, problems=[],
                          samples=[("calstream_open_associations", {"stage": "stage3"}, 1.0)],
                          planner=view)
        return render(Status(0.0, "calstream.", "calstream", [daemon], {},
                             BrokerView("127.0.0.1:9092"), summarise_planner([daemon]),
                             summarise_parked([daemon]))).splitlines()

    for odd in ({"namespaces": {"live": 5}}, {"namespaces": []},
                {"namespaces": {"live": {"stage3": {"candidates": [{"candidate": "c"}]}}}},
                {"namespaces": {"live": {"stage3": {"missing": {"jw1": 3}}}}}):
        lines = shown(odd)
        assert any(line.startswith("  planner view (/planner): not understood (")
                   for line in lines), (odd, lines)
        assert "  open associations (planner metrics): stage3 1" in lines  # the rest still said
    for odd in (5, [], "x", {"leadership": "x", "namespaces": {}},
                {"leadership": {"role": 5}, "namespaces": {}}):
        lines = shown(odd)  # taken as no view, or as an active planner's
        assert not any("not understood" in line for line in lines), (odd, lines)


def test_parked_work_says_what_to_do_for_its_cause():
    """`status` listed "detector1: 1 item(s), disk_full" and nothing else: at
    3 a.m. the operator had to find docs/operations.md to learn that the
    fix is space on the product store, and which log line has its error."""
    from calstream.daemon.operations import parked_causes

    lines = parked_causes.parked_lines([
        {"stage": "detector1", "cause": "disk_full", "items": 2},
        {"stage": "stage2", "cause": "read_only", "items": 1},
        {"stage": "detector1", "cause": "crds_reference_corrupt", "items": 1},
        {"stage": "planner", "cause": "something_new", "items": 1}])
    text = "\n".join(lines)
    assert "  detector1: 2 item(s), disk_full: free space" in text
    assert "  stage2: 1 item(s), read_only: remount" in text
    assert "crds sync --files" in text and "--repair-files" in text
    assert "  planner: 1 item(s), something_new: " in text  # a cause not known here still has a way on
    # Where the path is: the daemon's log line for each parked item.
    assert "parked on an infrastructure fault" in lines[-1] and "log" in lines[-1]
    # Every cause the daemons park on has its own words.
    from calstream.daemon.deciders.broker_refusals import BROKER_ERROR, TOPIC_NOT_AUTHORIZED
    from calstream.daemon.doers.file_reads import INBOX_HUNG, STORE_HUNG, WORK_DIR_HUNG
    from calstream.daemon.doers.inbox.watch_keeper import INBOX_GONE
    from calstream.daemon.doers.start_waits import TOPICS_MISSING
    from calstream.steps import failures
    causes = {failures.DISK_FULL, failures.READ_ONLY, failures.MOUNT_GONE, failures.CRDS_UNREACHABLE,
              failures.CRDS_REFERENCE_MISSING, failures.CRDS_LOOKUP,
              failures.CRDS_REFERENCE_CORRUPT, "broker_unreachable", TOPICS_MISSING, INBOX_GONE,
              INBOX_HUNG, STORE_HUNG, WORK_DIR_HUNG, TOPIC_NOT_AUTHORIZED, BROKER_ERROR}
    assert causes <= set(parked_causes.NEXT_STEP)


def test_work_parked_on_a_fault_is_no_healthy_status():
    """A product store full or read-only: every detector1 item parked (and
    stepping aside, so the daemon stays ready), `CalstreamItemsParked`
    critical, and `calstream status` exited 0, "healthy": true -- a check in
    a script said all was well while nothing could be written."""
    daemon = Endpoint("http://127.0.0.1:9310", reachable=True, ready=True,
                      samples=[("calstream_parked_items",
                                {"stage": "detector1", "cause": "disk_full"}, 3.0)])
    broker = BrokerView("127.0.0.1:9092")
    parked = Status(0.0, "calstream.", "calstream", [daemon], {}, broker, {},
                    summarise_parked([daemon]))
    assert parked.healthy is False and parked.as_dict()["healthy"] is False
    cleared = Endpoint("http://127.0.0.1:9310", reachable=True, ready=True,
                       samples=[("calstream_parked_items",
                                 {"stage": "detector1", "cause": "disk_full"}, 0.0)])
    assert Status(0.0, "calstream.", "calstream", [cleared], {}, broker, {},
                  summarise_parked([cleared])).healthy is True


def test_dead_letters_and_holds_name_the_command_that_acts_on_them():
    """status listed dead letters (a redriven one among them, unmarked) and
    held exposures with their reasons, and nothing about what to run next:
    which letters wait for a redrive, how a hold is released."""
    from calstream.daemon.operations import status_render

    letter = {"emitted_at": "2026-12-07T00:48:23.522Z", "stage": "detector1",
              "category": "permanent_failure", "exposure_id": "jw01234001001_02101_00005_nrcb1",
              "reason": "calwebb_detector1 failed"}
    recent = status_render._recent(BrokerView("h:1", dead_letters=[letter]), 0.0)
    assert any("calstream deadletters list --pending" in line for line in recent)
    assert not any("--pending" in line for line in status_render._recent(BrokerView("h:1"), 0.0))
    hold = {"exposure_id": "jw01234001001_02101_00002_nrcb1", "state": "held",
            "since": "2026-12-07T00:47:20.993Z", "reason": "ENGQLPTG=PLANNED"}
    lines = status_render._holds(BrokerView("h:1", holds=[hold], holds_checked=True), 0.0)
    assert any("calstream holds release EXPOSURE --reason" in line for line in lines)
    assert not any("release" in line
                   for line in status_render._holds(BrokerView("h:1", holds=[]), 0.0))
