"""Replay selection, retention gaps and coverage: pure functions, no broker."""

import datetime as dt
import os

import pytest

from calstream.daemon.deciders.replay_selection import (
    BadSelection,
    Candidate,
    PartitionScan,
    Selection,
    coverage,
    parse_when,
    replayed_message,
    retention_gaps,
    select,
)
from calstream.daemon.doers.product_store import BadNamespace, ProductStore, check_namespace
from calstream.daemon.doers.promotion import current_namespace, ensure_current, promote
from calstream.daemon.operations.config import ConfigError
from calstream.steps.fitsfile import file_digest
from calstream.topics import contract

DIGEST = "sha256:" + "0" * 64
T0 = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def arrival(exposure, *, minutes=0, digest=DIGEST, instrument="NIRCAM", exp_type="NRC_IMAGE",
            **extra):
    when = T0 + dt.timedelta(minutes=minutes)
    header = {"PROGRAM": exposure[2:7], "OBSERVTN": exposure[7:10], "VISIT": exposure[10:13],
              "VISITGRP": "02", "SEQ_ID": "1", "ACT_ID": "01", "EXPOSURE": "00001",
              "INSTRUME": instrument, "DETECTOR": "NRCB1", "EXP_TYPE": exp_type, "NEXPOSUR": 4,
              "NINTS": 1, "NGROUPS": 5, "SUBARRAY": "SUB160", "ENGQLPTG": "CALCULATED",
              "DATE-OBS": "2024-01-15", "TIME-OBS": "08:00:00"}
    return contract.build(
        "arrival", contract.event_id("arrival", exposure, digest), exposure_id=exposure,
        path=f"/inbox/{exposure}_uncal.fits", digest=digest, size=10,
        detected_at=contract.iso(when), source="watch", priority="live", header=header,
        **extra).body


def cand(message, partition=0, offset=0, minutes=None):
    minutes = minutes if minutes is not None else offset
    return Candidate(partition, offset, int((T0.timestamp() + 60 * minutes) * 1000), message)


A = "jw01234001001_02101_00001_nrcb1"
B = "jw01234001001_02101_00002_nrcb1"
C = "jw01234002001_02101_00001_mirimage"
D = "jw04321001001_02101_00001_nrcb1"


def test_selection_by_time_program_observation_instrument_and_type():
    cs = [cand(arrival(A, minutes=0), 0, 0), cand(arrival(B, minutes=10), 1, 0),
          cand(arrival(C, minutes=20, instrument="MIRI", exp_type="MIR_IMAGE"), 2, 0),
          cand(arrival(D, minutes=30), 3, 0)]

    def names(sel):
        return sorted(c.message["exposure_id"] for c in select(cs, sel)[0])

    assert names(Selection()) == sorted([A, B, C, D])
    assert names(Selection(since=T0 + dt.timedelta(minutes=10),
                           until=T0 + dt.timedelta(minutes=30))) == [B, C]
    assert names(Selection(programs={"01234"})) == [A, B, C]
    assert names(Selection(programs={"01234"}, observations={"002"})) == [C]
    assert names(Selection(instruments={"nircam"})) == [A, B, D]
    assert names(Selection(exp_types={"mir_image"})) == [C]
    assert names(Selection(exposures={A, D}, visits={"001"})) == [A, D]


def test_the_latest_message_per_exposure_wins_and_redeliveries_count_once():
    first = arrival(A, minutes=0)
    corrected = arrival(A, minutes=5, digest="sha256:" + "1" * 64)
    cs = [cand(first, 0, 0), cand(first, 0, 1), cand(corrected, 0, 2), cand(arrival(B), 1, 0)]
    chosen, matched, superseded = select(cs, Selection())
    assert {c.message["exposure_id"]: c.message["digest"] for c in chosen} == \
        {A: corrected["digest"], B: DIGEST}
    assert (matched, superseded) == (3, 1)


def test_replayed_messages_are_never_a_replay_source():
    replayed = arrival(A, replay={"replay_id": "0" * 16, "namespace": "n1"})
    chosen, _, _ = select([cand(replayed)], Selection())
    assert chosen == []


def test_work_orders_from_a_namespace_are_no_replay_source():
    order = dict(schema="calstream.work_order", event_id="1" * 64, product_name=A,
                 program="01234", pipeline="calwebb_image2", stage="stage2",
                 inputs=[{"path": f"/p/{A}_rate.fits", "digest": DIGEST}])
    bogus = {**order, "event_id": "2" * 64,
             "inputs": [{"path": f"/p/namespaces/n1/{A}_rate.fits", "digest": DIGEST}]}
    chosen, _, _ = select([cand(order, 0, 0), cand(bogus, 0, 1)], Selection(),
                          live_input=lambda path: "/namespaces/" not in path)
    assert [c.message["event_id"] for c in chosen] == ["1" * 64]


def test_a_range_before_the_oldest_retained_record_is_a_gap_only_if_records_were_lost():
    t = T0 + dt.timedelta(days=3)
    intact = PartitionScan(0, high_watermark=5, first_offset=0, first_time=t)
    truncated = PartitionScan(1, high_watermark=50, first_offset=40, first_time=t)
    emptied = PartitionScan(2, high_watermark=7)
    assert retention_gaps([intact], T0) == []
    assert retention_gaps([intact, truncated], t + dt.timedelta(hours=1)) == []
    [gap] = retention_gaps([intact, truncated], T0)
    assert "partition 1" in gap and "0..39" in gap and "offset 40" in gap
    assert len(retention_gaps([truncated], None)) == 1  # "everything" reaches back too
    assert "every record is gone" in retention_gaps([emptied], T0)[0]


def test_coverage_counts_and_first_last_offset_and_time_per_partition():
    scans = [PartitionScan(0, 10, 0, T0), PartitionScan(1, 4, 2, T0), PartitionScan(2, 0)]
    chosen = [cand(arrival(A), 0, 3), cand(arrival(B), 0, 7), cand(arrival(D), 1, 2)]
    rows = {r.partition: r for r in coverage(scans, chosen)}
    assert (rows[0].count, rows[0].first_offset, rows[0].last_offset) == (2, 3, 7)
    assert rows[0].first_time == contract.iso(T0 + dt.timedelta(minutes=3))
    assert rows[0].last_time == contract.iso(T0 + dt.timedelta(minutes=7))
    assert (rows[1].count, rows[1].log_start_offset, rows[1].high_watermark) == (1, 2, 4)
    assert (rows[2].count, rows[2].first_offset) == (0, None)


def test_a_replayed_arrival_carries_the_request_and_is_a_valid_message():
    request = {"replay_id": "ab" * 8, "from": "raw", "namespace": "ctx1535",
               "crds_context": "jwst_1535.pmap", "requested_at": contract.utc_now(),
               "selection": {}}
    key, message = replayed_message(cand(arrival(A), 2, 9), source="raw",
                                    topic="calstream.raw", request=request)
    assert key == A and message["priority"] == "replay" and message["source"] == "replay"
    assert message["replay"]["source"] == {"topic": "calstream.raw", "partition": 2, "offset": 9}
    assert message.event_id != arrival(A)["event_id"]
    contract.decode(contract.encode(message), expected="arrival")


def test_replay_requests_are_validated_by_the_schema():
    for bad in ({"replay_id": "0" * 16, "namespace": "live"},
                {"replay_id": "0" * 16, "namespace": "Bad Name"},
                {"replay_id": "0" * 16, "namespace": "n", "crds_context": "latest"},
                {"namespace": "n"}):
        with pytest.raises(contract.InvalidMessage):
            arrival(A, replay=bad)


def test_times_and_namespaces_are_checked():
    assert parse_when("2026-11-24") == dt.datetime(2026, 11, 24, tzinfo=dt.UTC)
    assert parse_when("2026-11-24T06:00:00Z").hour == 6
    with pytest.raises(BadSelection):
        parse_when("yesterday")
    with pytest.raises(BadSelection):
        Selection(since=T0, until=T0)
    assert check_namespace("ctx1535-2026.11") == "ctx1535-2026.11"
    for bad in ("current", "../x", "A", ""):
        with pytest.raises(BadNamespace):
            check_namespace(bad)
    with pytest.raises(BadNamespace):
        check_namespace("live", allow_live=False)


def test_namespace_trees_and_an_atomic_promotion(tmp_path):
    store = ProductStore(tmp_path)
    ensure_current(store)
    assert os.readlink(tmp_path / "current") == "." and current_namespace(store) == "live"
    ns = store.for_namespace("n1")
    assert ns.directory("01234", "001") == tmp_path / "namespaces/n1/01234/001"
    assert store.namespace_of(ns.directory("01234", "001") / "x.fits") == "n1"
    assert store.namespace_of(store.directory("01234", "001") / "x.fits") == "live"
    assert store.namespace_of(tmp_path.parent / "elsewhere") is None
    with pytest.raises(ConfigError):
        promote(store, "n1")  # nothing in it yet
    scratch = ns.scratch("01234", "001", "w" * 64)
    (scratch / "jw_rate.fits").write_bytes(b"x")
    rate = ns.directory("01234", "001") / "jw_rate.fits"
    # The store moves in only what the record lists, and promote checks it.
    event = {"crds_context": "jwst_0002.pmap",
             "replay": {"replay_id": "1" * 16, "from": "raw", "crds_context": "jwst_0002.pmap"},
             "outputs": [{"path": str(rate), "digest": file_digest(scratch / "jw_rate.fits"),
                          "size": 1}]}
    ns.publish(scratch, "01234", "001", name="jw", stage="detector1",
               record={"work_id": "w" * 64, "event": event})
    message = promote(store, "n1", reason="test")
    assert os.readlink(tmp_path / "current") == "namespaces/n1"
    assert (tmp_path / "current/01234/001/jw_rate.fits").read_bytes() == b"x"
    assert (message["namespace"], message["previous"], message["records"]) == ("n1", "live", 1)
    assert message["replays"][0]["replay_id"] == "1" * 16
    assert len(list((tmp_path / "promotions").glob("*-n1.json"))) == 1
    assert promote(store, "live")["previous"] == "n1"
    assert current_namespace(store) == "live"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".current")] == []


def test_subscribe_filters_on_namespace():
    from calstream.daemon.operations.cli.main import build_parser
    from calstream.daemon.operations.subscribe import Filters

    def keep(*flags, namespace=None):
        args = build_parser().parse_args(["subscribe", *flags])
        event = {"program": "01234", "emitted_at": contract.utc_now(), "outputs": []}
        if namespace:
            event["namespace"] = namespace
        return Filters(args).match(event)

    assert keep() and keep(namespace="n1")
    assert keep("--namespace", "live") and not keep("--namespace", "live", namespace="n1")
    assert keep("--namespace", "n1", "--namespace", "n2", namespace="n2")


def test_a_bad_selection_is_a_configuration_error_of_the_command(capsys):
    from calstream.daemon.operations.cli.main import main

    # Refused before any broker is contacted (the address is never dialled).
    for bad in (["--since", "yesterday"], ["--since", "2026-11-24", "--until", "2026-11-24"]):
        assert main(["replay", "--namespace", "n1", "--kafka-bootstrap", "127.0.0.1:9",
                     *bad]) == 2
        assert "configuration error" in capsys.readouterr().err


@pytest.mark.parametrize("context", ["../../x.pmap", "jwst_1535.pmap\n", "latest", "JWST.pmap"])
def test_replay_refuses_a_context_that_is_no_context_name(tmp_path, context):
    """The stages admit only a context named as a work order's is (a replay's
    becomes the run's CRDS_CONTEXT): `calstream replay` refuses the others
    before it reads a topic."""
    import anyio

    from calstream.daemon.deciders.replay_selection import Selection
    from calstream.daemon.operations.config import load
    from calstream.daemon.operations.replay import run_replay

    cfg = load(None, env={}, flags={"work_dir": tmp_path})
    with pytest.raises(ConfigError, match="is not a context name"):
        anyio.run(lambda: run_replay(cfg, source="raw", selection=Selection(), namespace="n1",
                                     crds_context=context))


def order(name, inputs):
    """A stage-2 work order as far as a replay's source check reads it."""
    return {"schema": "calstream.work_order", "event_id": "e" * 64, "product_name": name,
            "pipeline": "calwebb_image2", "program": "01234", "observation": "001",
            "inputs": [{"path": p, "digest": DIGEST, "size": 1, "role": "rate"} for p in inputs]}


def test_a_forged_source_record_naming_a_file_outside_its_roots_is_never_replayed():
    """Anyone can write to raw and work.stage2: a replay republished an
    arrival of /etc/shadow, or an order whose input is another namespace's or
    no product, as it republishes the daemon's own (the stage refused it
    only later, as a dead letter the replay had made)."""
    from calstream.daemon.deciders.replay_selection import from_their_roots

    good = cand(arrival(A), 0, 1)
    forged = [cand({**arrival(B), "path": "/etc/shadow"}, 0, 2),
              cand({**arrival(C), "path": f"/inbox/../etc/{C}_uncal.fits"}, 0, 3),
              cand({**arrival(D), "path": f"/inboxes/{D}_uncal.fits"}, 0, 4),
              cand({**arrival(D), "path": f"/inbox/\x00/{D}_uncal.fits"}, 0, 5),
              cand({**arrival(D), "path": f"/inbox/{A}_uncal.fits"}, 0, 6)]
    kept, refused = from_their_roots([good, *forged], inbox_roots=["/inbox"],
                                     products_root="/products")
    assert kept == [good] and refused == len(forged)
    # Not told the roots (no --config, --inbox or --work-dir): still no file
    # but one of its own exposure's name, and none of the product store.
    elsewhere = cand({**arrival(D), "path": f"/elsewhere/{D}_uncal.fits"}, 0, 7)
    in_store = cand({**arrival(D), "path": f"/products/01234/001/{D}_uncal.fits"}, 0, 8)
    kept, refused = from_their_roots([good, elsewhere, in_store, *forged], inbox_roots=None,
                                     products_root="/products")
    assert kept == [good, elsewhere, forged[2]] and refused == len(forged)  # /inboxes: a root?

    live = cand(order(A, ["/products/01234/001/a_rate.fits"]), 1, 1)
    orders = [cand(order(B, ["/etc/shadow"]), 1, 2),
              cand(order(C, ["/products/namespaces/n1/01234/001/c_rate.fits"]), 1, 3),
              cand(order(D, ["/products/01234/001/d_rate.fits", "/dev/zero"]), 1, 4),
              cand(order(D, ["/products/../etc/passwd"]), 1, 5),
              cand({**order(D, []), "inputs": [{"path": 7}]}, 1, 6)]
    kept, refused = from_their_roots([live, *orders], inbox_roots=["/inbox"],
                                     products_root="/products")
    assert kept == [live] and refused == len(orders)


@pytest.mark.parametrize("bad", [{"programs": {"1234"}}, {"programs": {"012345"}},
                                 {"observations": {"1"}}, {"visits": {"0001"}},
                                 {"exposures": {"../jw01234"}}, {"exposures": {""}}])
def test_a_malformed_selection_value_is_refused_not_matched_against_nothing(bad):
    """`--program 1234` only said "nothing matched the selection": a program
    is 5 digits, an observation and a visit 3; an exposure is a name."""
    with pytest.raises(BadSelection):
        Selection(**bad)
    Selection(programs={"01234"}, observations={"001"}, visits={"002"},
              exposures={A, "jw01234-o001_t001_nircam_clear-f200w", A.upper()})


def test_a_malformed_program_is_a_configuration_error_of_the_command(capsys):
    from calstream.daemon.operations.cli.main import main

    assert main(["replay", "--namespace", "n1", "--kafka-bootstrap", "127.0.0.1:9",
                 "--program", "1234"]) == 2
    err = capsys.readouterr().err
    assert "configuration error" in err and "--program '1234'" in err and "5 digits" in err


def test_an_age_is_a_time_as_for_deadletters_list():
    """`replay --since 2h` was refused ('2h' is not a time) where
    `deadletters list --since 2h` took it: one parser for both."""
    from calstream.daemon.operations.cli import deadletters

    now = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    assert parse_when("2h", now) == now - dt.timedelta(hours=2)
    assert parse_when("1.5d", now) == deadletters.parse_when("1.5d", now)
    with pytest.raises(BadSelection, match="an age"):
        parse_when("2 hours", now)


def test_an_age_beyond_any_date_is_refused_not_a_traceback():
    """An age no datetime can hold (99999999999d) raised OverflowError through
    both commands: a traceback for a typo."""
    from calstream.daemon.deciders.command_times import NotATime
    from calstream.daemon.deciders.command_times import parse_when as any_command

    now = dt.datetime(2026, 12, 7, 2, 0, tzinfo=dt.UTC)
    for age in ("99999999999d", "3000000d", "9" * 400 + "s"):
        with pytest.raises(NotATime, match="too far back"):
            any_command(age, now)
        with pytest.raises(BadSelection, match="too far back"):
            parse_when(age, now)


def test_a_time_past_the_calendar_in_utc_is_refused_not_a_traceback():
    """A time whose zone takes it out of the years 1 to 9999 in UTC parsed,
    and raised OverflowError out of `replay` (its id, its report) once the
    whole source topic was scanned: a traceback for a typo."""
    from calstream.daemon.deciders.command_times import NotATime
    from calstream.daemon.deciders.command_times import parse_when as any_command

    for text in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        with pytest.raises(NotATime, match="not a time of the years 1 to 9999 in UTC"):
            any_command(text)
        with pytest.raises(BadSelection, match="not a time of the years 1 to 9999 in UTC"):
            parse_when(text)
    assert any_command("0001-01-01T00:00:00Z").year == 1


def test_a_broker_time_that_is_no_date_is_none_and_a_gap_it_hides_is_still_one():
    """A record's broker timestamp is its producer's: one past year 9999
    raised out of `calstream replay` (tests/integration/test_replay_forged.py).
    It is no time; a partition that lost records and whose oldest one has
    no date is a gap, not "every record is gone"."""
    from calstream.daemon.deciders.replay_selection import record_time, record_time_text

    assert record_time(int(T0.timestamp() * 1000)) == T0
    for forged in (10**15, -(10**15), 2**63 - 1, -(2**63)):
        assert record_time(forged) is None and record_time_text(forged) is None
    undated = PartitionScan(3, high_watermark=9, first_offset=4, first_time=None)
    [gap] = retention_gaps([undated], T0)
    assert "partition 3" in gap and "offset 4" in gap and "no date" in gap, gap
    rows = coverage([undated], [Candidate(3, 5, 10**15, arrival(A))])
    assert (rows[0].count, rows[0].first_time, rows[0].last_time) == (1, None, None)


def test_a_work_order_naming_another_programs_file_is_never_replayed():
    """The planner orders a program's products from that program's files
    alone (steps/associations/matching.py: every companion is of the science
    exposure's program). A forged order on work.stage2 of program 01234
    whose inputs include program 04321's live product was republished under
    the operator's replay, for a stage to mix another program's data
    (proprietary, perhaps) into 01234's namespace products. Left out now,
    and counted, as an order naming a file outside the store is."""
    from calstream.daemon.deciders.replay_selection import from_their_roots

    own = cand(order(A, ["/products/01234/001/a_rate.fits",
                         "/products/01234/002/bkg_rate.fits"]), 1, 1)
    mixed = cand(order(B, ["/products/01234/001/b_rate.fits",
                           "/products/04321/001/bkg_rate.fits"]), 1, 2)
    theirs = cand(order(B, ["/products/04321/001/b_rate.fits"]), 1, 3)
    top = cand(order(B, ["/products/b_rate.fits"]), 1, 4)  # in no program's tree
    kept, refused = from_their_roots([own, mixed, theirs, top], inbox_roots=["/inbox"],
                                     products_root="/products")
    assert kept == [own] and refused == 3
