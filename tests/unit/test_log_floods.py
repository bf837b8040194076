"""A poison stream makes one warning per record: the log summarises what
repeats (the deadletter topic and the metrics keep every one), and never
leaves out an error or an infrastructure fault. The clock is injected."""

import io
import logging

from calstream.daemon.deciders.log_floods import OVERFLOW, FloodWindows
from calstream.daemon.operations import logs


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logger(burst=3, window=60.0, max_kinds=1000):
    """A logger with the daemon's handler set-up, writing to a buffer."""
    out, clock = io.StringIO(), _Clock()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.TextFormatter())
    handler.addFilter(logs._Defaults())
    flood = logs.FloodControl(handler, FloodWindows(burst, window, max_kinds), clock=clock)
    handler.addFilter(flood)
    log = logging.getLogger(f"calstream.test.flood.{id(out)}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, out, clock, flood


def _dead_letter(log, i, stage="detector1", category="invalid_message"):
    log.warning("dead letter [%s/%s] %s: %s", stage, category, f"key-{i}", "not JSON",
                extra={"stage": stage, "category": category})


def test_a_flood_of_one_warning_is_summarised_when_its_window_ends():
    log, out, clock, flood = _logger()
    for i in range(1000):
        _dead_letter(log, i)
        clock.now += 0.01
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].endswith("key-2: not JSON")
    clock.now += 60
    flood.flush()
    summary = out.getvalue().splitlines()[3:]
    assert len(summary) == 1
    assert "WARNING calstream.test.flood" in summary[0] and "[detector1 - -]" in summary[0]
    assert "suppressed 997 similar warning(s) in the last 70 s; the last: " \
           "dead letter [detector1/invalid_message] key-999: not JSON" in summary[0]
    flood.flush()  # said once
    assert len(out.getvalue().splitlines()) == 4


def test_the_next_line_after_a_window_brings_its_summary_first():
    log, out, clock, _ = _logger()
    for i in range(10):
        _dead_letter(log, i)
    clock.now += 61
    _dead_letter(log, 10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 5
    assert "suppressed 7 similar warning(s)" in lines[3] and lines[4].endswith("key-10: not JSON")


def test_errors_infrastructure_faults_and_other_warnings_are_never_hidden():
    log, out, clock, _ = _logger()
    for i in range(100):
        _dead_letter(log, i)
        log.warning("item %d parked on an infrastructure fault (disk_full)", i,
                    extra={"stage": "detector1", "fault": "infrastructure"})
        log.error("broker lost (%d)", i)
        clock.now += 0.1
    log.warning("a warning of another kind")
    text = out.getvalue()
    assert text.count("dead letter [") == 3
    assert text.count("parked on an infrastructure fault") == 100
    assert text.count("broker lost") == 100
    assert text.endswith("a warning of another kind\n")


def test_each_stage_and_category_has_its_own_budget():
    log, out, _, _ = _logger()
    for i in range(10):
        _dead_letter(log, i, stage="watcher", category="bad_file")
        _dead_letter(log, i, stage="stage2", category="bad_input")
        _dead_letter(log, i, stage="stage2", category="retries_exhausted")
    assert len(out.getvalue().splitlines()) == 9


def test_data_faults_at_other_levels_are_flood_controlled_when_marked():
    log, out, _, _ = _logger()
    for i in range(10):
        log.error("record %d: cannot admit this record", i, extra={"fault": "data"})
        log.info("record %d: stale", i, extra={"fault": "data"})
        log.info("record %d: done", i)  # an ordinary info: never
    text = out.getvalue()
    assert (text.count("cannot admit"), text.count("stale"), text.count("done")) == (3, 3, 10)


def test_forged_kinds_share_one_budget_and_the_table_stays_bounded():
    log, out, clock, flood = _logger(max_kinds=5)
    for i in range(1000):
        _dead_letter(log, i, stage=f"forged-{i}")
    assert len(flood.windows._windows) == 6  # five kinds and the overflow's
    assert len(out.getvalue().splitlines()) == 5 + 3
    clock.now += 60
    flood.flush()
    assert "suppressed 992 similar warning(s)" in out.getvalue().splitlines()[-1]


def test_the_end_of_the_process_writes_every_summary():
    log, out, clock, flood = _logger()
    for i in range(5):
        _dead_letter(log, i)
    clock.now += 1
    flood.flush()
    assert "suppressed" not in out.getvalue()
    flood.flush(all_of_them=True)
    assert "suppressed 2 similar warning(s) in the last 1 s" in out.getvalue()


def test_the_daemons_log_summarises_a_flood(capsys):
    """logs.setup: 1,000 malformed records made 1,000 warnings."""
    logs.setup("INFO")
    try:
        log = logging.getLogger("calstream.test.setup")
        for i in range(1000):
            log.warning("dead letter [detector1/invalid_message] key-%d: not JSON", i,
                        extra={"stage": "detector1", "category": "invalid_message"})
        assert len(capsys.readouterr().err.splitlines()) == 20
        logs.flush_floods(all_of_them=True)  # as at the process's end
    finally:
        logging.getLogger().handlers[:] = []
    (summary,) = capsys.readouterr().err.splitlines()
    assert "suppressed 980 similar warning(s)" in summary


def test_windows_start_afresh_after_their_summary():
    w = FloodWindows(burst=2, window=10.0)
    assert [w.admit("k", t) for t in (0, 1, 2, 3)] == [True, True, False, False]
    assert w.ended(9.0) == []
    (s,) = w.ended(10.0)
    assert (s.kind, s.suppressed, s.seconds) == ("k", 2, 10.0)
    assert w.ended(100.0) == [] and [w.admit("k", t) for t in (11, 12, 13)] == [True, True, False]
    assert w.admit(OVERFLOW, 0) is True


def test_parking_lines_are_never_left_out(capsys):
    """A full disk parks every item in flight: each one's line is written,
    however many (they scale with the work in flight, not with a producer)."""
    import errno
    from types import SimpleNamespace

    from calstream.daemon.doers.parking import Parking
    from calstream.daemon.operations.metrics import Metrics

    cfg = SimpleNamespace(max_attempts=1, retry_backoff=0.1, park_recheck_seconds=30.0)
    logs.setup("INFO")
    try:
        for i in range(100):
            parking = Parking(cfg, Metrics(), stage="detector1", what=f"item {i}")
            parking.failed("disk_full", OSError(errno.ENOSPC, "No space left on device"))
            parking.resumed()
    finally:
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert err.count("parked on an infrastructure fault") == 100
    assert err.count("resumed after") == 100 and "suppressed" not in err


def test_the_watchers_lines_are_counted_by_their_own_call_sites(capsys):
    """Every line the watcher writes about a file goes through one helper
    (inbox/reports.log_file): counted by the helper's line, a junk flood's
    "rejected" lines left out its "on_reject failed" (a broker down) too."""
    from pathlib import Path

    from calstream.daemon.doers.inbox.reports import log_file

    logs.setup("INFO")
    try:
        for i in range(100):
            log_file(logging.WARNING, "rejected: not a JWST exposure name", Path(f"/in/junk{i}"))
        log_file(logging.WARNING, "on_reject failed (attempt 1): KafkaTimeoutError(); "
                 "retrying in 1 s", Path("/in/junk0"))
    finally:
        logging.getLogger().handlers[:] = []
    err = capsys.readouterr().err
    assert err.count("rejected: not a JWST") == 20 and "on_reject failed" in err


def test_a_json_summary_carries_its_count(capsys):
    import json

    logs.setup("INFO", json_logs=True)
    try:
        for i in range(30):
            logging.getLogger("calstream.test.json").warning("dead letter %d", i,
                                                             extra={"stage": "stage2"})
        logs.flush_floods(all_of_them=True)
    finally:
        logging.getLogger().handlers[:] = []
    summary = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert (summary["suppressed"], summary["stage"], summary["level"]) == (10, "stage2", "WARNING")
    assert summary["message"].endswith("the last: dead letter 29")


def test_a_line_left_out_keeps_no_traceback_or_argument_alive():
    """The last line left out was kept whole until its summary: with its
    traceback (every frame's locals: a pipeline's models, gigabytes in a
    worker) and its arguments, up to a minute, for each of 1,000 kinds."""
    import gc
    import sys
    import weakref

    class Model:
        def __str__(self) -> str:
            return "model of jw01"

    def fails(model):
        raise ValueError("bad pixel")

    log, out, clock, flood = _logger(burst=0)
    model = Model()
    kept = weakref.ref(model)
    try:
        fails(model)
    except ValueError:
        log.warning("could not read %s", model, exc_info=sys.exc_info(),
                    extra={"fault": "data"})
    del model
    gc.collect()
    assert kept() is None
    flood.flush(all_of_them=True)
    assert "suppressed 1 similar warning(s) in the last 0 s; the last: could not read model " \
           "of jw01" in out.getvalue()


def test_a_line_whose_message_cannot_be_shown_breaks_no_summary():
    """An object logged as the message whose text raises: the summary's
    example raised in the filter (the caller's next line) or in the
    heartbeat's flush, and a filter that raises breaks the caller."""

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text")

    log, out, clock, flood = _logger(burst=0)
    log.warning(Unprintable(), extra={"fault": "data"})
    flood.flush(all_of_them=True)
    assert "suppressed 1 similar warning(s)" in out.getvalue()
    assert "a message of type Unprintable" in out.getvalue()


def test_the_planners_lines_of_records_it_cannot_handle_are_flood_controlled(capsys):
    """Each record the planner could not handle (dead-lettered as bad_input)
    was an error with its traceback, never left out: one forged record that
    makes a decision raise, sent 1,000 times, was 1,000 tracebacks. The
    admission's "cannot admit this record" was marked a data fault; this was not."""
    from types import SimpleNamespace

    from calstream.daemon.doers.planner_decisions import RecordDecisions

    class Raising(RecordDecisions):
        def _decide(self, record, taken):
            raise KeyError("a field no check foresaw")

    planner = Raising()
    logs.setup("INFO")
    try:
        for offset in range(100):
            record = SimpleNamespace(topic="x.products", partition=0, offset=offset)
            assert planner._decision(record, None)[0] == "bad_input"
        lines = [line for line in capsys.readouterr().err.splitlines()
                 if "planner: cannot handle" in line]
        logs.flush_floods(all_of_them=True)
        (summary,) = capsys.readouterr().err.splitlines()
    finally:
        logging.getLogger().handlers[:] = []
    assert len(lines) == 20
    assert "suppressed 80 similar error(s)" in summary


class _RefusingProducer:
    """A producer whose own size check refuses every record, as aiokafka's
    does (MESSAGE_TOO_LARGE, the code a topic's max.message.bytes gives)."""

    async def send(self, *args, **kwargs):
        from aiokafka.errors import MessageSizeTooLargeError
        raise MessageSizeTooLargeError()


def test_a_flood_of_records_the_broker_refuses_is_summarised_though_logged_as_errors(
        monkeypatch):
    """Before: each refused dead letter (and each record a set put back left
    out) was an ERROR no flood control looked at: a topic refusing every
    letter wrote a line for each, as many as the poison stream's records."""
    import anyio

    from calstream.daemon.doers.kafka.publisher import Publisher
    from calstream.daemon.operations.metrics import Metrics
    from calstream.topics import contract, dead_letters
    from calstream.topics.catalog import Topics

    _, out, _, _ = _logger(burst=3)
    publisher_log = logging.getLogger("calstream.publisher")
    monkeypatch.setattr(publisher_log, "handlers", list(logging.getLogger(
        f"calstream.test.flood.{id(out)}").handlers))
    monkeypatch.setattr(publisher_log, "propagate", False)
    publisher = Publisher(_RefusingProducer(), Topics("p."), Metrics())

    def letter(n: int) -> tuple:
        return ("deadletter", f"k{n}", contract.build(
            "dead_letter", contract.event_id("dead_letter", "a test", n),
            **dead_letters.letter_fields(category="bad_file", reason="a test",
                                         stage="watcher", attempts=0, original=None)))

    async def refused_all() -> None:
        for n in range(10):
            await publisher.dead_letter(category="bad_file", reason="not FITS",
                                        stage="watcher", key=f"file-{n}")
        assert await publisher.publish_all([letter(n) for n in range(10)]) == 0

    anyio.run(refused_all)
    lines = out.getvalue().splitlines()
    assert sum(" not sent (event " in line for line in lines) == 3, lines
    assert sum("left out, not sent again" in line for line in lines) == 3, lines
