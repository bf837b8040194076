"""The inbox watcher on a real filesystem with real watchdog observers; no broker."""

import hashlib
import logging
import os
import time
from contextlib import asynccontextmanager

import anyio
import numpy as np
import pytest

from calstream.daemon.doers.inbox import Arrival, Rejection, Watcher
from calstream.steps.synthetic.headers import SMALL_UNCAL_HEADER, small_uncal

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]

SETTLE = 0.2

NAME = "jw01234001001_02101_00001_nrcb1_uncal.fits"

HEADER = {**SMALL_UNCAL_HEADER, "ENGQLPTG": "PLANNED"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def uncal_bytes(name: str = NAME, **changes) -> bytes:
    """A small uncal-like file whose header matches ``name``."""
    parts = name.split("_")
    hdr = {**HEADER, "EXPOSURE": parts[2][:5], "DETECTOR": parts[3].upper(), **changes}
    return small_uncal(hdr, np.arange(2 * 64 * 64, dtype=np.uint16).reshape(1, 2, 64, 64))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def drop(inbox, name: str, data: bytes) -> None:
    """Deliver as a downlink does: a temporary name, then a rename."""
    tmp = inbox / (name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, inbox / name)


class Recorder:
    def __init__(self, products=(), arrival_failures=0, reject_failures=0):
        self.arrivals: list[Arrival] = []
        self.rejections: list[Rejection] = []
        self.products = set(products)
        self.arrival_failures = arrival_failures
        self.reject_failures = reject_failures
        self.calls = 0

    async def on_arrival(self, a: Arrival) -> None:
        self.calls += 1
        if self.arrival_failures:
            self.arrival_failures -= 1
            raise ConnectionError("broker down")
        self.arrivals.append(a)

    async def on_reject(self, r: Rejection) -> None:
        if self.reject_failures:
            self.reject_failures -= 1
            raise ConnectionError("broker down")
        self.rejections.append(r)

    def has_products(self, exposure_id: str, digest: str) -> bool:
        return exposure_id in self.products


@pytest.fixture
def dirs(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return inbox, tmp_path / "quarantine", tmp_path / "state" / "ledger.sqlite"


def make(dirs, rec: Recorder, **kw) -> Watcher:
    inbox, quarantine, ledger = dirs
    kw = {
        "settle_seconds": SETTLE,
        "poll_interval": 0.1,
        "rescan_interval": 60.0,
        "retry_initial": 0.1,
        **kw,
    }
    return Watcher(
        inbox,
        quarantine,
        ledger,
        on_arrival=rec.on_arrival,
        on_reject=rec.on_reject,
        has_products=rec.has_products,
        **kw,
    )


@asynccontextmanager
async def running(watcher: Watcher):
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        yield watcher
        tg.cancel_scope.cancel()


# A bound for a broken watcher, not a measure: a loaded machine may take seconds.
async def wait_until(predicate, timeout: float = 30.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        await anyio.sleep(0.02)
    return time.monotonic() - start


async def test_file_copied_in_pieces_is_announced_only_when_whole(dirs):
    inbox = dirs[0]
    rec = Recorder()
    data = uncal_bytes()
    # Cut inside the primary header, exactly at the end of the primary HDU
    # (valid FITS, but no pixels yet), inside the SCI data, and inside the
    # final padding.
    cuts = [1000, 2880, 2 * 2880 + 5000, len(data) - 100, len(data)]
    async with running(make(dirs, rec)) as w:
        with open(inbox / NAME, "wb") as f:
            previous = 0
            for cut in cuts:
                f.write(data[previous:cut])
                f.flush()
                previous = cut
                if cut < len(data):
                    await anyio.sleep(3 * SETTLE)  # longer than the settle time
                    assert rec.arrivals == [] and rec.rejections == [], cut
        await wait_until(lambda: rec.arrivals)
        await anyio.sleep(3 * SETTLE)  # room for a second announcement, which must not come
        await wait_until(lambda: w.stats().pending == 0)
    [a] = rec.arrivals
    assert a.digest == sha(data) and a.size == len(data)
    assert a.exposure_id == "jw01234001001_02101_00001_nrcb1"
    assert a.source == "watch" and a.path == inbox / NAME
    assert a.header["ENGQLPTG"] == "PLANNED" and a.header["NEXPOSUR"] == 4
    assert a.detected_at <= time.time()
    assert rec.rejections == []


async def test_a_file_its_writer_closed_or_moved_in_is_not_settled(dirs, tmp_path):
    """Close-write and moved-to say the writer is done: no settle wait (a
    settle time of an hour shows it), while pieces each closed on their own
    still wait for the structure to be whole."""
    inbox = dirs[0]
    rec = Recorder()
    names = [NAME, "jw01234001001_02101_00002_nrcb1_uncal.fits",
             "jw01234001001_02101_00003_nrcb1_uncal.fits"]
    closed, moved, pieces = (uncal_bytes(n) for n in names)
    outside = tmp_path / "staging"
    outside.mkdir()
    async with running(make(dirs, rec, settle_seconds=3600.0)):
        (inbox / names[0]).write_bytes(closed)  # written in place, closed
        await wait_until(lambda: len(rec.arrivals) == 1, timeout=30)
        (outside / names[1]).write_bytes(moved)
        os.replace(outside / names[1], inbox / names[1])  # moved in from elsewhere
        await wait_until(lambda: len(rec.arrivals) == 2, timeout=30)
        cuts = [2880, 2 * 2880 + 5000, len(pieces) - 100, len(pieces)]
        previous = 0
        for cut in cuts:
            with open(inbox / names[2], "ab") as f:  # one open and close per piece
                f.write(pieces[previous:cut])
            previous = cut
            if cut < len(pieces):
                await anyio.sleep(3 * SETTLE)
                assert len(rec.arrivals) == 2 and rec.rejections == [], cut
        await wait_until(lambda: len(rec.arrivals) == 3, timeout=30)
    assert [(a.path.name, a.digest) for a in rec.arrivals] == [
        (names[0], sha(closed)), (names[1], sha(moved)), (names[2], sha(pieces))]
    assert rec.rejections == []


async def test_temp_name_then_rename_is_announced_once(dirs):
    inbox = dirs[0]
    rec = Recorder()
    data = uncal_bytes()
    async with running(make(dirs, rec)):
        for ignored in (NAME + ".part", NAME + ".tmp", NAME + "~", "." + NAME):
            (inbox / ignored).write_bytes(data)
        await anyio.sleep(3 * SETTLE)
        assert rec.arrivals == []
        os.replace(inbox / (NAME + ".part"), inbox / NAME)
        await wait_until(lambda: rec.arrivals)
        await anyio.sleep(4 * SETTLE)
    assert len(rec.arrivals) == 1 and rec.rejections == []
    assert (inbox / ("." + NAME)).exists()  # ignored files are left alone


async def test_same_content_once_corrected_content_again(dirs, caplog):
    inbox = dirs[0]
    rec = Recorder()
    first = uncal_bytes()
    corrected = uncal_bytes(ENGQLPTG="CALCULATED_TRACK_TR_202111")
    caplog.set_level(logging.INFO, logger="calstream.watcher")
    async with running(make(dirs, rec)) as w:
        drop(inbox, NAME, first)
        await wait_until(lambda: rec.arrivals)
        drop(inbox, NAME, first)  # redelivered, same bytes
        await wait_until(lambda: w.stats().duplicates == 1)
        drop(inbox, NAME, corrected)  # same name, new pointing
        await wait_until(lambda: len(rec.arrivals) == 2)
        await anyio.sleep(3 * SETTLE)
    assert [a.digest for a in rec.arrivals] == [sha(first), sha(corrected)]
    assert rec.arrivals[1].header["ENGQLPTG"] == "CALCULATED_TRACK_TR_202111"
    # Every message names the exposure, in the text and as a field.
    records = [r for r in caplog.records if r.name == "calstream.watcher" and r.exposure_id]
    assert records and all(r.exposure_id in r.getMessage() for r in records)


async def test_bad_files_are_quarantined_and_good_ones_still_flow(dirs):
    inbox, quarantine, _ = dirs
    rec = Recorder(reject_failures=1)  # the first rejection report fails too
    async with running(make(dirs, rec)) as w:
        (inbox / NAME).write_text("a telemetry log\n" * 100)
        await wait_until(lambda: rec.rejections)
        # Same name again, now a name/header mismatch: must not overwrite.
        drop(inbox, NAME, uncal_bytes(DETECTOR="NRCB2"))
        drop(inbox, "README.txt", b"hello")
        await wait_until(lambda: len(rec.rejections) == 3)
        good = "jw01234001001_02101_00002_nrcb1_uncal.fits"
        drop(inbox, good, uncal_bytes(good))
        await wait_until(lambda: rec.arrivals)
        assert w.stats().rejected == 3
        # Each mark goes once its dead letter is acknowledged (quarantine_leftovers.py).
        await wait_until(lambda: not list(quarantine.glob("*.unreported")))
    reasons = " | ".join(r.reason for r in rec.rejections)
    assert (
        "not a FITS file" in reasons and "DETECTOR = 'NRCB2'" in reasons and "README.txt" in reasons
    )
    assert sorted(p.name for p in quarantine.iterdir()) == sorted(
        [
            NAME,
            NAME + ".reason.txt",
            NAME.replace(".fits", ".1.fits"),
            NAME.replace(".fits", ".1.fits") + ".reason.txt",
            "README.txt",
            "README.txt.reason.txt",
        ]
    )
    mismatch = next(r for r in rec.rejections if "DETECTOR" in r.reason)
    assert mismatch.quarantined_to == quarantine / NAME.replace(".fits", ".1.fits")
    assert mismatch.exposure_id == "jw01234001001_02101_00001_nrcb1"
    assert mismatch.digest and mismatch.digest.startswith("sha256:")
    note = (quarantine / (NAME + ".reason.txt")).read_text()
    assert "not a FITS file" in note and "quarantined_at" in note
    assert sorted(p.name for p in inbox.iterdir()) == ["jw01234001001_02101_00002_nrcb1_uncal.fits"]


async def test_startup_scan(dirs):
    inbox, _, ledger = dirs
    a_name = NAME
    b_name = "jw01234001001_02101_00002_nrcb1_uncal.fits"
    c_name = "jw01234001001_02101_00003_nrcb1_uncal.fits"
    a, b, c = uncal_bytes(a_name), uncal_bytes(b_name), uncal_bytes(c_name)

    # A first run announces A; the broker then loses it (no products).
    first = Recorder()
    async with running(make(dirs, first)):
        drop(inbox, a_name, a)
        await wait_until(lambda: first.arrivals)

    (inbox / b_name).write_bytes(b)
    (inbox / c_name).write_bytes(c[: len(c) // 2])  # still arriving
    old = time.time() - 60
    for n in (a_name, b_name, c_name):
        os.utime(inbox / n, (old, old))

    rec = Recorder(products={"jw01234001001_02101_00002_nrcb1"})
    async with running(make(dirs, rec)) as w:
        # By the time run() reports started, the scan has been acted on.
        assert [(x.exposure_id, x.source, x.digest) for x in rec.arrivals] == [
            ("jw01234001001_02101_00001_nrcb1", "startup-scan", sha(a))
        ]
        assert w.stats().recorded == 1 and w.stats().pending == 1
        with open(inbox / c_name, "ab") as f:
            f.write(c[len(c) // 2 :])
        await wait_until(lambda: len(rec.arrivals) == 2)
        assert rec.arrivals[1].exposure_id == "jw01234001001_02101_00003_nrcb1"
        assert rec.arrivals[1].source == "watch"
        # B was recorded: dropping it again is a duplicate.
        drop(inbox, b_name, b)
        await wait_until(lambda: w.stats().duplicates == 1)
    assert len(rec.arrivals) == 2 and rec.rejections == []
    assert ledger.exists()


async def restart_without_hashing(dirs, monkeypatch) -> Recorder:
    """A fresh watcher on the same inbox and ledger, under which hashing any
    file fails the test; returns what it announced at start-up."""

    def no_hashing(path, chunk=0):
        raise AssertionError("an unchanged file was hashed again")

    from calstream.daemon.doers import digest_memo

    # A restart: the process remembers nothing (digest_memo), the ledger does.
    monkeypatch.setattr(digest_memo, "_memo", type(digest_memo._memo)())
    monkeypatch.setattr(digest_memo, "file_digest", no_hashing)
    rec = Recorder()
    async with running(make(dirs, rec)):
        pass
    return rec


async def test_startup_reuses_ledger_digests(dirs, monkeypatch):
    inbox = dirs[0]
    data = uncal_bytes()
    first = Recorder()
    async with running(make(dirs, first)):
        drop(inbox, NAME, data)
        await wait_until(lambda: first.arrivals)

    rec = await restart_without_hashing(dirs, monkeypatch)
    assert [(a.source, a.digest) for a in rec.arrivals] == [("startup-scan", sha(data))]


async def test_stop_right_after_announcing_still_records_the_ledger(dirs, monkeypatch):
    """A shutdown between the announcement and the ledger write must not
    make the next start hash and announce the file again."""
    inbox = dirs[0]
    data = uncal_bytes()
    first = Recorder()
    async with anyio.create_task_group() as tg:
        w = make(dirs, first)

        async def announce_then_stop(a: Arrival) -> None:
            first.arrivals.append(a)
            tg.cancel_scope.cancel()  # pending at the watcher's next checkpoint

        w._on_arrival = announce_then_stop
        await tg.start(w.run)
        drop(inbox, NAME, data)
    assert len(first.arrivals) == 1

    rec = await restart_without_hashing(dirs, monkeypatch)
    assert [(a.source, a.digest) for a in rec.arrivals] == [("startup-scan", sha(data))]


async def test_polling_observer(dirs):
    inbox = dirs[0]
    rec = Recorder()
    # No rescan runs within the test (an hour apart): the polling observer
    # alone must see the file.
    async with running(make(dirs, rec, polling=True, poll_interval=0.1, rescan_interval=3600.0)):
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals, timeout=60)
    assert len(rec.arrivals) == 1


async def test_missed_events_are_caught_by_the_rescan(dirs):
    inbox = dirs[0]
    rec = Recorder()
    w = make(dirs, rec, rescan_interval=0.3)
    w.events.notify = lambda raw, writer_done=False: None  # as if every event were lost
    async with running(w):
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals)
        await anyio.sleep(1.0)  # several rescans: no second announcement
    assert len(rec.arrivals) == 1


def _sci_data_end(data: bytes) -> int:
    """Where the SCI extension's data of the uncal file ``data`` ends."""
    import tempfile

    from calstream.steps.fitsfile import fits_layout

    with tempfile.NamedTemporaryFile(suffix=".fits") as f:
        f.write(data)
        f.flush()
        sci = fits_layout(f.name).hdus[1]
    assert sci.extname.strip() == "SCI" and sci.data_size > 3000
    return sci.data_offset + sci.data_size


async def test_truncated_file_is_rejected_after_the_timeout(dirs):
    inbox, quarantine, _ = dirs
    rec = Recorder()
    data = uncal_bytes()
    # The time-out well past the look below: a loaded machine may wake the
    # test late, and a rejection it then found would not be the watcher's fault.
    async with running(make(dirs, rec, incomplete_timeout=5.0)):
        # Cut inside the SCI data: its header declares more than the file holds.
        (inbox / NAME).write_bytes(data[: _sci_data_end(data) - 3000])
        await anyio.sleep(0.6)
        assert rec.rejections == []
        await wait_until(lambda: rec.rejections)
    [r] = rec.rejections
    assert r.reason.startswith(f"{NAME}: truncated:") and "declares" in r.reason
    assert r.quarantined_to == quarantine / NAME and r.quarantined_to.exists()
    assert r.exposure_id == "jw01234001001_02101_00001_nrcb1"
    assert not (inbox / NAME).exists() and rec.arrivals == []


async def test_broker_down_then_up_loses_nothing(dirs):
    inbox = dirs[0]
    rec = Recorder(arrival_failures=3)
    async with running(make(dirs, rec)) as w:
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals)
        assert rec.calls == 4 and w.stats().announced == 1 and w.stats().errors == 3
        drop(inbox, NAME, uncal_bytes())  # recorded only after success: dedupes
        await wait_until(lambda: w.stats().duplicates == 1)
    assert len(rec.arrivals) == 1


@pytest.mark.parametrize("damage", ["garbage", "torn"])
async def test_a_damaged_ledger_is_moved_aside_and_the_watcher_starts(dirs, damage, caplog):
    """No one has to delete a damaged ledger before the watcher can start:
    it is moved aside, a new one starts, and the start-up scan does what a
    first start does (a file whose products exist is recorded, not announced)."""
    inbox, _, ledger = dirs
    done_name, new_name = NAME, "jw01234001001_02101_00002_nrcb1_uncal.fits"
    first = Recorder()
    async with running(make(dirs, first)):
        drop(inbox, done_name, uncal_bytes(done_name))
        await wait_until(lambda: first.arrivals)
    if damage == "garbage":
        ledger.write_bytes(os.urandom(8192))
    else:  # a real database cut short: opens, then fails its check
        ledger.write_bytes(ledger.read_bytes()[: ledger.stat().st_size // 2])
    (inbox / new_name).write_bytes(uncal_bytes(new_name))
    rec = Recorder(products={"jw01234001001_02101_00001_nrcb1"})
    async with running(make(dirs, rec)) as w:
        await wait_until(lambda: rec.arrivals)
        assert [a.exposure_id for a in rec.arrivals] == ["jw01234001001_02101_00002_nrcb1"]
        assert w.stats().recorded == 1  # the one whose products exist
    assert [p.name.split(".unreadable-")[0] for p in ledger.parent.glob("*.unreadable-*")] \
        == ["ledger.sqlite"]
    assert "cannot be read" in caplog.text


async def test_a_file_whose_arrival_message_is_refused_is_rejected_not_retried(dirs):
    """A refused message is a fact about the file (whatever the door missed),
    not a broker fault: the file is quarantined with the reason once."""
    from calstream.topics import contract

    inbox, quarantine, _ = dirs

    class Refusing(Recorder):
        async def on_arrival(self, a: Arrival) -> None:
            self.calls += 1
            raise contract.InvalidMessage("arrival message invalid at header/PROGRAM")

    rec = Refusing()
    async with running(make(dirs, rec)):
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.rejections)
        await anyio.sleep(0.5)  # a retry would come within retry_initial (0.1 s)
    assert rec.calls == 1
    assert "its arrival message is refused: arrival message invalid" in rec.rejections[0].reason
    assert not (inbox / NAME).exists() and list(quarantine.glob(f"*{NAME}*"))


async def test_a_burst_is_announced_first_come_first_served(dirs, monkeypatch):
    # A downlink pass drops many files at once. Each file's door checks are
    # several reads (layout, header, digest); served in turn by file, not by
    # read, the first file is announced as soon as its own reads are done,
    # not after every file's layout has been read (issue 15: a 96-file burst
    # waited 250 ms for its first announcement and so for its first run).
    from calstream.daemon.doers import file_reads

    inbox = dirs[0]
    names = [f"jw01234001001_02101_{n:05d}_nrcb1_uncal.fits" for n in range(1, 21)]
    old = time.time() - 60  # written whole before the start: nothing to settle
    for name in names:
        (inbox / name).write_bytes(uncal_bytes(name))
        os.utime(inbox / name, (old, old))
    happened: list[tuple[str, str]] = []
    layout = file_reads.fits_layout

    def recorded_layout(path):
        happened.append(("layout", path.name))
        return layout(path)

    monkeypatch.setattr(file_reads, "fits_layout", recorded_layout)
    rec = Recorder()
    announce = rec.on_arrival

    async def recorded_arrival(a: Arrival) -> None:
        happened.append(("announce", a.exposure_id))
        await announce(a)

    rec.on_arrival = recorded_arrival
    async with running(make(dirs, rec, io_concurrency=2)):
        pass  # the start-up scan is acted on before run() reports started
    assert len(rec.arrivals) == len(names)
    first_announcement = next(i for i, (what, _) in enumerate(happened) if what == "announce")
    last_layout = happened.index(("layout", names[-1]))
    assert first_announcement < last_layout, happened


@pytest.mark.parametrize("how", ["removed", "moved aside"])
async def test_an_inbox_made_again_is_watched_again(dirs, how, caplog):
    """An operator (or a remount) puts a new directory where the inbox was:
    the observer's watch was on the old one. With no rescan within the test
    (an hour apart), the watcher must see the new directory and watch it."""
    inbox = dirs[0]
    rec = Recorder()
    async with running(make(dirs, rec, rescan_interval=3600.0)):
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: len(rec.arrivals) == 1)
        if how == "removed":
            for f in inbox.iterdir():
                f.unlink()
            inbox.rmdir()
        else:
            inbox.rename(inbox.with_name("inbox.old"))
        await anyio.sleep(0.5)
        inbox.mkdir(exist_ok=True)  # the watcher may have made it again already
        second = "jw01234001001_02101_00002_nrcb1_uncal.fits"
        drop(inbox, second, uncal_bytes(second))
        await wait_until(lambda: len(rec.arrivals) == 2, timeout=60)
    assert rec.arrivals[1].path == inbox / second
    assert "watched again" in caplog.text


async def test_an_inbox_that_cannot_be_made_again_is_parked_then_watched(tmp_path, caplog):
    """The inbox's parent goes (a volume unmounted) and a file stands in its
    way: the watch cannot be kept, the inbox is parked with a metric; once
    the way is clear the inbox is made again, watched, and the metric drops."""
    from types import SimpleNamespace

    from calstream.daemon.doers.parking import Parking
    from calstream.daemon.operations.metrics import Metrics

    volume = tmp_path / "volume"
    inbox = volume / "inbox"
    inbox.mkdir(parents=True)
    dirs = (inbox, tmp_path / "quarantine", tmp_path / "state" / "ledger.sqlite")
    cfg = SimpleNamespace(max_attempts=1, retry_backoff=0.1, park_recheck_seconds=0.5)
    metrics = Metrics()

    def parked():
        return metrics.registry.get_sample_value(
            "calstream_parked_items", {"stage": "watcher", "cause": "inbox_gone", "root": ""})

    rec = Recorder()
    watcher = make(dirs, rec, rescan_interval=3600.0,
                   parking=lambda what: Parking(cfg, metrics, stage="watcher", what=what))
    async with running(watcher):
        inbox.rmdir()
        volume.rmdir()
        volume.write_bytes(b"not a directory")
        await wait_until(lambda: parked() == 1)
        volume.unlink()
        await wait_until(lambda: inbox.is_dir() and parked() == 0)
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: len(rec.arrivals) == 1)
    assert "watched again" in caplog.text


async def test_an_arrival_the_topic_refuses_waits_parked_in_the_inbox_not_quarantined(dirs):
    """A record within calstream's own limit that the broker refuses (the raw
    topic's max.message.bytes lowered, a policy) is the topic's fault, not
    the file's: it was quarantined as a bad file, and with the topic
    misconfigured every delivery was moved aside, each to be put back by
    hand. Now the file waits in the inbox, parked ``topic_refuses_record``,
    and is announced by itself once the topic takes it. The refusal: the
    publisher's own, of the producer's size check (the code a topic gives)."""
    from types import SimpleNamespace

    from aiokafka.errors import MessageSizeTooLargeError

    from calstream.daemon.doers.kafka.publisher import Publisher
    from calstream.daemon.doers.parking import Parking
    from calstream.daemon.operations.metrics import Metrics
    from calstream.topics import contract
    from calstream.topics.catalog import Topics

    cfg = SimpleNamespace(max_attempts=1, retry_backoff=0.05, park_recheck_seconds=0.1)
    metrics = Metrics()

    class MisconfiguredTopic:
        refusals = 3

        async def send(self, *args, **kwargs):
            self.refusals -= 1
            if self.refusals >= 0:
                raise MessageSizeTooLargeError()
            raise ConnectionError("fixed: the recorder takes it from here")

    publisher = Publisher(MisconfiguredTopic(), Topics("p."), metrics)
    parked_while_refused = []

    class Refused(Recorder):
        async def on_arrival(self, a: Arrival) -> None:
            self.calls += 1
            parked_while_refused.append(metrics.registry.get_sample_value(
                "calstream_parked_items",
                {"stage": "watcher", "cause": "topic_refuses_record", "root": ""}))
            message = contract.build(
                "arrival", contract.event_id("arrival", a.exposure_id, a.digest),
                exposure_id=a.exposure_id, path=str(a.path), digest=a.digest, size=a.size,
                detected_at=contract.iso(a.detected_at), source=a.source, priority="live",
                header=a.header)
            try:
                await publisher.publish("raw", a.exposure_id, message)
            except ConnectionError:  # the topic fixed
                self.arrivals.append(a)

    rec = Refused()
    w = make(dirs, rec, parking=lambda what, root=None: Parking(cfg, metrics, stage="watcher",
                                                                what=what, root=root))
    async with running(w):
        drop(dirs[0], NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals)
    assert rec.rejections == [] and (dirs[0] / NAME).exists()
    assert not dirs[1].exists() or not list(dirs[1].glob(f"*{NAME}*"))
    assert rec.calls == 4 and parked_while_refused[1:] == [1, 1, 1]
    assert metrics.registry.get_sample_value(
        "calstream_parked_items",
        {"stage": "watcher", "cause": "topic_refuses_record", "root": ""}) == 0
    assert metrics.records_refused.labels(topic="raw", code="MESSAGE_TOO_LARGE")._value.get() == 3


async def test_an_announcement_the_broker_refuses_is_parked_then_resumed(dirs):
    """Announcements failing on the broker were retried on a fixed doubling
    (no jitter: a burst of files retried in step) and shown nowhere but the
    log. Now each is parked as every other infrastructure fault is
    (calstream_parked_items, jittered re-checks) and resumes by itself."""
    from types import SimpleNamespace

    from calstream.daemon.doers.parking import Parking
    from calstream.daemon.operations.metrics import Metrics

    cfg = SimpleNamespace(max_attempts=1, retry_backoff=0.05, park_recheck_seconds=0.1)
    metrics = Metrics()

    def sample(name):
        labels = {"stage": "watcher", "cause": "broker_unreachable"}
        if name == "calstream_parked_items":
            labels["root"] = ""
        return metrics.registry.get_sample_value(name, labels) or 0

    rec = Recorder(arrival_failures=4)
    w = make(dirs, rec, parking=lambda what, root=None: Parking(cfg, metrics, stage="watcher",
                                                                what=what, root=root),
             fault_of=lambda exc: "broker_unreachable" if isinstance(exc, ConnectionError)
             else None)
    async with running(w):
        drop(dirs[0], NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals)
    assert rec.calls == 5
    assert sample("calstream_parked_total") == 1 and sample("calstream_parked_items") == 0


class SilentStorage:
    """A read of the inbox that blocks in a real thread (a mount gone silent)
    until ``answer`` is set, for the calls ``blocks(args)`` picks; and the
    watcher's parking, with its ``inbox_hung`` samples."""

    def __init__(self, monkeypatch, owner, name: str, blocks=lambda *args: True,
                 silent: bool = True) -> None:
        import threading
        from types import SimpleNamespace

        from calstream.daemon.doers.parking import Parking
        from calstream.daemon.operations.metrics import Metrics

        self.answer, real = threading.Event(), getattr(owner, name)
        if not silent:
            self.answer.set()

        def read(*args):
            if blocks(*args):
                self.answer.wait(60)
            return real(*args)

        monkeypatch.setattr(owner, name, read)
        cfg = SimpleNamespace(max_attempts=2, retry_backoff=0.05, park_recheck_seconds=0.1)
        self.metrics = Metrics()
        self.parking = lambda what, root=None: Parking(cfg, self.metrics, stage="watcher",
                                                       what=what)

    def parked(self, name: str = "calstream_parked_items") -> float:
        labels = {"stage": "watcher", "cause": "inbox_hung"}
        if name == "calstream_parked_items":
            labels["root"] = ""
        return self.metrics.registry.get_sample_value(name, labels) or 0


async def test_a_file_whose_storage_stops_answering_is_parked_not_quarantined(dirs, monkeypatch):
    """A read of an inbox file on a mount gone silent never returns (blocked
    here in a real thread until the test lets it go). Before, it held its
    turn for ever, and after its retries a file whose bytes nobody had seen
    would have been quarantined as unreadable. Now it is parked as the
    storage's fault (``inbox_hung``) while the other files flow, and it is
    announced once the storage answers."""
    from calstream.daemon.doers import file_reads

    hung_name = NAME.replace("00001", "00002")
    storage = SilentStorage(monkeypatch, file_reads, "fits_layout",
                            blocks=lambda path: path.name == hung_name)
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, io_concurrency=1, parking=storage.parking)
    async with running(w):
        drop(dirs[0], hung_name, uncal_bytes(hung_name))
        await wait_until(lambda: storage.parked() == 1)
        # Its one turn is not held: the next file is announced meanwhile.
        drop(dirs[0], NAME, uncal_bytes())
        await wait_until(lambda: [a.path.name for a in rec.arrivals] == [NAME])
        await anyio.sleep(1.0)  # several re-checks while it still hangs
        assert not rec.rejections and not any(dirs[1].glob("*")), "nothing quarantined"
        assert w.reads.hung() == 1, "one thread left waiting on it, not one per re-check"
        storage.answer.set()  # the storage answers again
        await wait_until(lambda: len(rec.arrivals) == 2)
        await wait_until(lambda: storage.parked() == 0)
    assert rec.arrivals[1].path.name == hung_name and not rec.rejections
    assert storage.parked("calstream_parked_total") == 1


async def test_an_inbox_whose_stat_stops_answering_is_parked_and_resumes(dirs, monkeypatch):
    """The watch keeper's stat of the inbox, every 2 s, blocked the watcher's
    loop until a silent mount came back, with nothing shown. Now it is
    parked as ``inbox_hung`` and resumes by itself; files that came
    meanwhile are announced."""
    from calstream.daemon.doers.inbox.observer_bridge import ObserverBridge

    storage = SilentStorage(monkeypatch, ObserverBridge, "watch_problem", silent=False)
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=storage.parking)
    w.keeper.check_seconds = 0.1
    async with running(w):
        storage.answer.clear()  # the mount goes silent
        await wait_until(lambda: storage.parked() == 1)
        storage.answer.set()
        await wait_until(lambda: storage.parked() == 0)
        drop(dirs[0], NAME, uncal_bytes())
        await wait_until(lambda: len(rec.arrivals) == 1)


async def test_a_start_whose_inbox_listing_stops_answering_waits_parked_then_takes_its_files(
        dirs, monkeypatch):
    """The start-up scan's listing of an inbox on a silent mount held the
    daemon's start with nothing said; now it is parked as ``inbox_hung``
    meanwhile, and the files there are taken up once it answers."""
    from calstream.daemon.doers.inbox.observer_bridge import InboxScope

    storage = SilentStorage(monkeypatch, InboxScope, "list_files")
    drop(dirs[0], NAME, uncal_bytes())
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=storage.parking)
    w.keeper.check_seconds = 0.1
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await wait_until(lambda: storage.parked() == 1)
        storage.answer.set()
        await wait_until(lambda: len(rec.arrivals) == 1 and storage.parked() == 0)
        tg.cancel_scope.cancel()


async def test_a_reannouncement_whose_inbox_listing_stops_answering_waits_parked(
        dirs, monkeypatch):
    """After the embedded broker restarted empty the watcher lists the inbox
    again to announce what has no products yet (reannounce). That listing
    was the one read of the inbox left untimed: on a silent mount it held
    the broker's recovery, in a thread a stop cannot cancel, with nothing
    said. Now it waits as the start's does: the inbox parked as
    ``inbox_hung``, the files announced again once it answers."""
    from calstream.daemon.doers.inbox.observer_bridge import InboxScope

    storage = SilentStorage(monkeypatch, InboxScope, "list_files", silent=False)
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=storage.parking)
    w.keeper.check_seconds = 0.1
    try:
        async with running(w):
            drop(dirs[0], NAME, uncal_bytes())
            await wait_until(lambda: len(rec.arrivals) == 1)
            storage.answer.clear()  # the mount goes silent as the broker comes back empty
            done = anyio.Event()

            async def reannounce():
                await w.reannounce()
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(reannounce)
                try:
                    await wait_until(lambda: storage.parked() == 1, timeout=10)
                finally:
                    storage.answer.set()  # it answers again (and no thread outlives the test)
                await done.wait()
            await wait_until(lambda: len(rec.arrivals) == 2 and storage.parked() == 0)
    finally:
        storage.answer.set()


async def test_a_start_listing_a_large_inbox_on_slow_storage_that_answers_is_not_hung(
        dirs, monkeypatch):
    """The start-up scan lists the inbox with a stat per file: thousands of
    files on a network mount take longer than a read's minute as a whole,
    every entry answering. Timed as a whole, each listing was abandoned as
    hung and made again from the start, for ever: the start never ended, and
    no file was announced. A listing is hung when it stops answering."""
    import time as clock

    from calstream.daemon.doers.inbox.observer_bridge import InboxScope

    real = InboxScope.list_files

    def list_files(self, *answered):  # ten slow entries, each answering
        for _ in range(10):
            clock.sleep(0.1)
            for tell in answered:
                tell()
        return real(self, *answered)

    monkeypatch.setattr(InboxScope, "list_files", list_files)
    drop(dirs[0], NAME, uncal_bytes())
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.5)
    w.keeper.check_seconds = 0.1
    async with anyio.create_task_group() as tg:
        tg.start_soon(w.run)
        await wait_until(lambda: len(rec.arrivals) == 1, timeout=15)
        tg.cancel_scope.cancel()
