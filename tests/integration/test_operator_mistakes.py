"""What a tired operator's slip does to the real broker's records (no daemon):
an empty REF (an unset "$REF" in a script) redrove every dead letter, a
mistyped REF said "redriven" and exit 0, and a release whose reason says
nothing ended in a traceback after the holds topic was read. Each is now
refused before anything is sent."""

import anyio
import pytest

from calstream.daemon.doers import kafka
from calstream.daemon.doers.message_sender import send_messages
from calstream.daemon.operations.cli.main import main
from calstream.daemon.operations.config import load
from calstream.daemon.operations.status_render import LINE_CHARS
from calstream.topics import contract
from calstream.topics.catalog import Topics

HELD = "jw01234001001_02101_00003_nrcb1"


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def _deployment(broker: str, prefix: str, tmp_path):
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": prefix})
    topics = Topics(cfg.topic_prefix)
    await kafka.create_topics(cfg, topics)
    # The originals on their topic, at the places the letters name: a
    # redrive sends only what its topic held (deciders/redrive_reading.py).
    producer = kafka.producer(cfg)
    await producer.start()
    try:
        for n in (1, 2):
            await producer.send_and_wait(topics.name("raw"), b"{}", partition=0,
                                         key=f"jw01234001001_02101_0000{n}_nrcb1".encode())
    finally:
        await producer.stop()
    letters = [(f"jw01234001001_02101_0000{n}_nrcb1", contract.build(
        "dead_letter", f"{n:064x}", attempts=1, category="permanent_failure",
        stage="detector1", exposure_id=f"jw01234001001_02101_0000{n}_nrcb1",
        reason="calwebb_detector1 failed: CrdsLookupError",
        original={"topic": topics.name("raw"), "partition": 0, "offset": n - 1,
                  "key": f"jw01234001001_02101_0000{n}_nrcb1", "value": "{}"}))
        for n in (1, 2)]
    hold = contract.build("hold", contract.event_id("hold", HELD), exposure_id=HELD,
                          program="01234", state="held", reason="ENGQLPTG=PLANNED",
                          since=contract.utc_now(), digest="sha256:" + "ab" * 32)
    await send_messages(cfg, topics.name("deadletter"), letters)
    await send_messages(cfg, topics.name("holds"), [(HELD, hold)])
    return cfg, topics


def _cli(cfg, *argv: str) -> int:
    try:
        return main([*argv, "--kafka-bootstrap", cfg.kafka_bootstrap,
                     "--topic-prefix", cfg.topic_prefix])
    except SystemExit as stop:  # argparse's usage error
        return stop.code


@pytest.mark.anyio
async def test_a_slip_of_the_operator_sends_nothing(broker, unique_prefix, tmp_path, capsys):
    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731

    assert await run("deadletters", "redrive", "", "--reason", "CRDS cache resynced") == 2
    assert "an empty REF names no dead letter" in capsys.readouterr().err
    assert await run("deadletters", "redrive", "0:0", "0:99", "--reason",
                     "CRDS cache resynced") == 1
    err = capsys.readouterr().err
    assert "no dead letter is 0:99" in err and "nothing redriven" in err, err
    # The two event ids are 00..01 and 00..02: a prefix of both names neither.
    assert await run("deadletters", "redrive", "000", "--reason", "CRDS cache resynced") == 1
    assert "000 names 2 or more dead letters" in capsys.readouterr().err
    for reason in ("", "   ", "ok"):
        assert await run("holds", "release", HELD, "--reason", reason) == 2
        err = capsys.readouterr().err
        assert "says nothing" in err and "Traceback" not in err, err
        assert await run("deadletters", "redrive", "0:0", "--reason", reason) == 2
        assert "says nothing" in capsys.readouterr().err
    assert len(await kafka.read_to_end(cfg, topics.name("raw"))) == 2  # the originals only
    assert await kafka.read_to_end(cfg, topics.name("pointing")) == []

    # What was meant still goes: one dead letter, one release.
    assert await run("deadletters", "redrive", "0:0", "--reason", "CRDS cache resynced") == 0
    assert "redriven 1 dead letter" in capsys.readouterr().out
    assert await run("holds", "release", HELD, "--reason", "WCS checked by hand") == 0
    assert len(await kafka.read_to_end(cfg, topics.name("raw"))) == 3
    assert len(await kafka.read_to_end(cfg, topics.name("pointing"))) == 1


@pytest.mark.anyio
async def test_a_release_refused_says_why_on_stderr(broker, unique_prefix, tmp_path, capsys):
    """`holds release` of an exposure that is not held, or that waits for its
    direct image, printed its error on stdout: a script that keeps stdout
    (or shows only stderr) lost it. The reason is the record's text, of any
    length: the refusal printed it whole (here 200 KB), now bounded as a
    line of `calstream status`, what to do still at its end."""
    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    grism = "jw01234001001_02101_00005_nrcalong"
    waiting = contract.build("hold", contract.event_id("hold", grism), exposure_id=grism,
                             program="01234", state="held",
                             reason="no direct image yet" + " and more" * 22_000,
                             since=contract.utc_now(), digest="sha256:" + "cd" * 32,
                             waiting_for="direct_image")
    await send_messages(cfg, topics.name("holds"), [(grism, waiting)])
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731

    assert await run("holds", "release", "jw01234001001_02101_00009_nrcb1", "--reason",
                     "WCS checked by hand") == 1
    out, err = capsys.readouterr()
    assert out == "" and "is not held" in err, (out, err)
    assert await run("holds", "release", grism, "--reason", "WCS checked by hand") == 1
    out, err = capsys.readouterr()
    assert out == "" and "waits for its direct_image (no direct image yet and more" in err, \
        (out, err)
    assert len(err) <= LINE_CHARS and err.endswith("not an operator\n"), len(err)
    assert await kafka.read_to_end(cfg, topics.name("pointing")) == []


@pytest.mark.anyio
async def test_a_release_of_an_exposure_known_but_never_held_says_so(
        broker, unique_prefix, tmp_path, capsys):
    """`holds release` of an exposure the planner has a product event of, but
    never held, said "not known to the planner": the operator went looking
    for an exposure that was there. Now it says what is true."""
    from ..unit.test_level3_state import T0, dither, rate

    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    event = rate(dither(1), T0)
    await send_messages(cfg, topics.name("products"), [(event["exposure_id"], event)])
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731

    assert await run("holds", "release", event["exposure_id"], "--reason",
                     "WCS checked by hand") == 1
    out, err = capsys.readouterr()
    assert out == "" and "not known" not in err, (out, err)
    assert "known to the planner, never held" in err and "nothing to release" in err, err
    assert await run("holds", "release", "jw01234001001_02101_00009_nrcb1", "--reason",
                     "WCS checked by hand") == 1
    assert "not known to the planner" in capsys.readouterr().err
    assert await kafka.read_to_end(cfg, topics.name("pointing")) == []


@pytest.mark.anyio
async def test_the_never_held_search_reads_newest_first_within_its_bound(
        broker, unique_prefix, tmp_path):
    """The search of `holds release` for an exposure it holds nothing of read
    the whole products topic into memory (months of events, for a mistyped
    id). It reads newest first, a window at a time, up to its bound, and
    says when older records were left unread."""
    from calstream.daemon.operations.cli.holds import _never_held

    from ..unit.test_level3_state import T0, dither, rate

    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    events = [rate(dither(n), T0 + n) for n in range(1, 61)]
    await send_messages(cfg, topics.name("products"), [(e["exposure_id"], e) for e in events])
    oldest, newest = events[0]["exposure_id"], events[-1]["exposure_id"]

    assert "never held" in await _never_held(cfg, topics, newest, search=10)
    cut = await _never_held(cfg, topics, oldest, search=10)
    assert cut.startswith("not known to the planner") and "newest 10 records" in cut \
        and "(50 older not read)" in cut, cut
    assert "never held" in await _never_held(cfg, topics, oldest)


@pytest.mark.anyio
@pytest.mark.parametrize("fault", ["disk_full", "read_only"])
async def test_a_promotion_the_store_refuses_switches_nothing(
        broker, unique_prefix, tmp_path, capsys, fault):
    """`calstream promote live` on a full product store swapped `current`,
    then died in a traceback writing its record (ENOSPC), left the empty
    temporary behind and published no event: the operator could not tell
    whether the promotion had happened. Now the record is written first:
    the store refusing it switches nothing, says so in one line, exit 1."""
    import os

    from .test_parking import full_tmpfs, read_only_dir

    store = tmp_path / "store"
    cfg = load(None, env={}, flags={"work_dir": tmp_path / "work", "products": store,
                                    "kafka_bootstrap": broker, "topic_prefix": unique_prefix})
    refusing = full_tmpfs if fault == "disk_full" else read_only_dir
    # The store as a promotion left it: its namespace current, its record dir there.
    store.mkdir()
    (store / "namespaces" / "r1").mkdir(parents=True)
    (store / "promotions").mkdir()
    os.symlink("namespaces/r1", store / "current")
    with refusing(store) if fault == "read_only" else _full_keeping(store, refusing):
        code = await anyio.to_thread.run_sync(
            lambda: _cli(cfg, "promote", "live", "--reason", "back to live",
                         "--work-dir", str(tmp_path / "work"), "--products", str(store)))
        err = capsys.readouterr().err
        assert code == 1, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert "nothing was switched" in err and str(store) in err
        assert os.readlink(store / "current") == "namespaces/r1"
        assert list((store / "promotions").iterdir()) == []  # no temporary left behind


def _full_keeping(store, full_tmpfs):
    """A full tmpfs mounted over ``store``, its layout made again inside."""
    import contextlib
    import os

    @contextlib.contextmanager
    def mounted():
        (store / "current").unlink()
        with full_tmpfs(store, "1m") as clear:
            clear()  # room to lay the store out, then full again
            (store / "namespaces" / "r1").mkdir(parents=True)
            (store / "promotions").mkdir()
            os.symlink("namespaces/r1", store / "current")
            from .test_parking import fill
            fill(store)
            yield
    return mounted()


@pytest.mark.anyio
async def test_a_promotion_of_less_than_live_says_what_live_has_and_waits_for_a_flag(
        broker, unique_prefix, tmp_path, capsys):
    """`calstream promote r1` of a replay of one exposure out of three
    swapped `current` without a word: the other two vanished from the
    products of record. Now it names them, switches nothing and publishes
    nothing (exit 3) until `--allow-partial`."""
    import os

    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.promotion import ensure_current

    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    store = ProductStore(cfg.products)
    ensure_current(store)
    names = [f"jw01234001001_02101_0000{n}_nrcb1" for n in (1, 2, 3)]
    for tree, made in ((store, names), (store.for_namespace("r1"), names[:1])):
        for n, name in enumerate(made):
            tree.write_record("01234", "001", name=name, stage="detector1", record={
                "work_id": f"{n:064x}", "event": {
                    "stage": "detector1", "program": "01234", "observation": "001",
                    "exposure_id": name, "product_name": name, "outputs": [],
                    "emitted_at": "2026-11-24T05:00:00Z"}})
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(  # noqa: E731
        cfg, "promote", "r1", "--work-dir", str(tmp_path), *argv))

    assert await run("--reason", "new flats") == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not promoted" in err, err
    assert "2 of live's 3 exposure(s) have no product in r1" in err, err
    assert names[1] in err and names[2] in err and "--allow-partial" in err, err
    assert os.readlink(store.top / "current") == "."
    assert not (store.top / "promotions").exists()
    topic = Topics(cfg.topic_prefix).name("promotions")
    assert await kafka.read_to_end(cfg, topic) == []

    assert await run("--reason", "new flats", "--allow-partial") == 0
    assert os.readlink(store.top / "current") == "namespaces/r1"
    [record] = await kafka.read_to_end(cfg, topic)
    event = contract.decode(record.value, "promotion")
    assert event["namespace"] == "r1" and event["records"] == 1


@pytest.mark.anyio
async def test_a_letter_is_shown_at_its_own_place(broker, unique_prefix, tmp_path, capsys):
    """A dead letter may carry fields of its own, and a forged ``"ref"`` was
    printed by `list --json` and `show` as the letter's place: a script that
    redrove the letter it picked by ``.ref`` redrove another. And `show` of a
    REF that names none said so on stdout, the result's."""
    import json

    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    places = {}  # event id -> its place, as the broker has it
    for record in await kafka.read_to_end(cfg, topics.name("deadletter")):
        places[contract.decode(record.value).event_id] = f"{record.partition}:{record.offset}"
    first = places[f"{1:064x}"]
    forged = contract.build("dead_letter", f"{3:064x}", attempts=1, category="bad_input",
                            stage="detector1", reason="pick me", ref=first,
                            copies=[first], redrives=[{"by": "x"}])
    await send_messages(cfg, topics.name("deadletter"), [("k", forged)])
    for record in await kafka.read_to_end(cfg, topics.name("deadletter")):
        places[contract.decode(record.value).event_id] = f"{record.partition}:{record.offset}"
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731

    assert await run("deadletters", "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["event_id"]: r["ref"] for r in rows} == places
    [picked] = [r for r in rows if r["reason"] == "pick me"]
    assert (picked["copies"], picked["redrives"]) == ([], [])
    assert await run("deadletters", "show", places[f"{3:064x}"]) == 0
    shown = json.loads(capsys.readouterr().out.rsplit("}", 1)[0] + "}")
    assert (shown["ref"], shown["redrives"]) == (places[f"{3:064x}"], [])

    assert await run("deadletters", "show", "0:99") == 1
    out, err = capsys.readouterr()
    assert out == "" and "no dead letter is 0:99" in err, (out, err)


@pytest.mark.anyio
async def test_a_redrive_stopped_half_way_says_what_went_and_runs_again(
        broker, unique_prefix, tmp_path, capsys):
    """A redrive stopped half-way (Ctrl-C, the broker gone) said nothing of
    the letters it had sent: exit 130 or one line of the broker, and the
    operator could not tell what went. Now each is named as it goes out, the
    stop says how many went, and the same command again sends the rest only.
    The stop here: the second letter's send fails (a letter of neither key
    nor value, which the command's own checks keep from getting there)."""
    import dataclasses

    from calstream.daemon.operations.cli.dead_letter_reading import named_letters
    from calstream.daemon.operations.cli.deadletters import redrive

    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    [first], _ = await named_letters(cfg, topics, [f"{1:064x}"])
    unsendable = dataclasses.replace(first, ref="0:999", body={
        **first.body, "event_id": "f" * 64,
        "original": {"topic": topics.name("raw"), "partition": 0, "offset": 0, "key": None,
                     "value": None}})
    with pytest.raises(Exception):  # noqa: B017 - aiokafka's own refusal
        await redrive(cfg, [first, unsendable], "tester", "CRDS cache resynced")
    out, err = capsys.readouterr()
    assert f"{first.ref}: re-published to {topics.name('raw')}" in out, out
    assert "stopped after 1 of 2 dead letter(s) redriven" in err, err

    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731
    assert await run("deadletters", "redrive", "--all", "--reason", "CRDS cache resynced") == 0
    out = capsys.readouterr().out
    # The first is skipped (at the place of its letter put back, marked).
    assert out.count("already redriven") == 1 and "redriven 1 dead letter" in out, out
    assert f"{first.ref}: re-published" not in out, out
    # The two originals, the first redriven once, the second once.
    assert len(await kafka.read_to_end(cfg, topics.name("raw"))) == 4


def test_a_promotion_interrupted_after_its_switch_says_so(broker, unique_prefix, tmp_path,
                                                          capsys, monkeypatch):
    """Ctrl-C while `promote` announced its switch ended the command with
    exit 130 and not a word, while `current` already served the namespace:
    the operator took it for not done. Now it says what was done, and that
    the same command again publishes the event. (A real SIGINT, sent as the
    announcement starts; run in the main thread, where asyncio takes it.)"""
    import os
    import signal

    from calstream.daemon.doers.product_store import ProductStore
    from calstream.daemon.doers.promotion import current_namespace, ensure_current
    from calstream.daemon.operations.cli import promote

    store = ProductStore(tmp_path / "products")
    ensure_current(store)
    ns = store.for_namespace("n1")
    scratch = ns.scratch("01234", "001", "w" * 64)
    (scratch / "jw_rate.fits").write_bytes(b"x")
    ns.publish(scratch, "01234", "001", name="jw", stage="detector1",
               record={"work_id": "w" * 64, "event": {"crds_context": "jwst_0002.pmap",
                                                      "outputs": []}})
    announce = promote.send_messages

    async def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        await anyio.sleep(5)
        return await announce(*args, **kwargs)

    monkeypatch.setattr(promote, "send_messages", interrupted)
    # Ctrl-C as a terminal delivers it: a test run started with SIGINT ignored
    # (a background job, nohup) inherits that, the signal did nothing and the
    # command went on to exit 0.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = main(["promote", "n1", "--work-dir", str(tmp_path), "--kafka-bootstrap", broker,
                     "--topic-prefix", unique_prefix])
    finally:
        signal.signal(signal.SIGINT, before)
    assert code == 130
    err = capsys.readouterr().err
    assert current_namespace(store) == "n1"
    assert "now serves n1, but its promotion event was not published" in err, err


@pytest.mark.anyio
async def test_what_the_broker_refuses_for_what_it_is_is_said_in_one_line(
        broker, unique_prefix, tmp_path, capsys, monkeypatch):
    """A record the broker refuses (a topic's max.message.bytes below what
    calstream sends, a policy) stopped `deadletters redrive` and the
    commands that send a message at the first one, with aiokafka's
    traceback. Now a redrive says each letter it cannot send and goes on
    with the others (exit 1 when none went, as the table says), and a
    command's message refused ends it in one line saying what went. The
    refusal: the producer's own size check, which raises the code a Kafka
    topic's does (tansu ignores max.message.bytes)."""
    from aiokafka import AIOKafkaProducer

    from calstream.daemon.doers.kafka import clients

    cfg, topics = await _deployment(broker, unique_prefix, tmp_path)
    monkeypatch.setattr(kafka, "producer", lambda c: AIOKafkaProducer(
        **clients.client_options(c), acks="all", max_request_size=64))
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731

    assert await run("deadletters", "redrive", "--all", "--reason", "topic fixed") == 1
    out, err = capsys.readouterr()
    assert out.count("cannot be redriven: the broker refused the record") == 2, out
    assert "MESSAGE_TOO_LARGE" in out and "redriven 0 dead letter(s)" in out \
        and "2 could not be" in out, out
    assert "Traceback" not in err, err

    assert await run("holds", "release", HELD, "--reason", "WCS checked by hand") == 1
    out, err = capsys.readouterr()
    assert "requested" not in out, out
    [line] = err.splitlines()
    assert line.startswith("calstream: the broker refused the record") and \
        "0 message(s) sent before it" in line, err
    assert len(await kafka.read_to_end(cfg, topics.name("raw"))) == 2  # nothing redriven


@pytest.mark.anyio
async def test_dead_letters_and_holds_on_a_broker_that_lists_no_topic_are_not_none(
        broker, unique_prefix, tmp_path, capsys):
    """A broker that restarted lists no topic until a daemon has created them
    again (the embedded one comes back empty, and the daemon then puts its
    dead letters back): `deadletters list --pending --json` printed [] and
    exit 0 meanwhile, "nothing pending", while they were on their way back
    (as a topic prefix mistyped). Now it says the topic is not there, exit 1;
    so does `holds list` of the holds topic, with no planner's ledger to read."""
    cfg = load(None, env={}, flags={"work_dir": tmp_path, "kafka_bootstrap": broker,
                                    "topic_prefix": unique_prefix})
    run = lambda *argv: anyio.to_thread.run_sync(lambda: _cli(cfg, *argv))  # noqa: E731
    for argv in (("deadletters", "list", "--pending", "--json"), ("deadletters", "list"),
                 ("deadletters", "redrive", "--all", "--reason", "CRDS cache resynced",
                  "--dry-run"),
                 ("holds", "list", "--json"), ("holds", "release", HELD, "--reason", "WCS ok")):
        assert await run(*argv) == 1, argv
        out, err = capsys.readouterr()
        topic = "holds" if argv[0] == "holds" else "deadletter"
        assert out == "" and f"{unique_prefix}{topic}: the broker lists no such topic " \
            "(yet)" in err and "Traceback" not in err, (argv, out, err)
