"""The door on sick storage. A soft network mount whose server is gone
answers every read with EIO, a stale handle with ESTALE; a hard mount gone
silent never answers at all, and not only the door's reads wait on it: the
inbox's making, its observer's start and stop, the quarantine's move, the
product store's look-up. Real files, real observers, real threads held
until the test lets them go. No broker."""

import errno
import os
import threading
from types import SimpleNamespace

import anyio
import pytest

from calstream.daemon.doers import file_reads
from calstream.daemon.doers.inbox.quarantine import Quarantine
from calstream.daemon.doers.inbox.watcher import Watcher
from calstream.daemon.doers.parking import Parking
from calstream.daemon.operations.metrics import Metrics

from .test_watcher import NAME, Recorder, dirs, drop, make, running, uncal_bytes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]
__all__ = ["dirs"]  # the fixture, used by name

SICK = NAME.replace("00001", "00002")


@pytest.fixture
def anyio_backend():
    return "asyncio"


class FailingMount:
    """Reads of ``SICK`` fail with ``error`` while ``failing``; with
    ``whole_mount``, so does any read of the inbox directory (a soft mount
    whose server is gone fails them all). The watcher's parking, sampled."""

    def __init__(self, monkeypatch, inbox, error: int, *, whole_mount: bool) -> None:
        self.failing = True
        self.reads_failed = 0
        real_layout, real_scandir = file_reads.fits_layout, os.scandir

        def layout(path, *args, **kw):
            if self.failing and path.name == SICK:
                self.reads_failed += 1
                raise OSError(error, os.strerror(error), str(path))
            return real_layout(path, *args, **kw)

        def scandir(path=".", *args):
            if self.failing and whole_mount and os.fspath(path) == os.fspath(inbox):
                raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(path))
            return real_scandir(path, *args)

        monkeypatch.setattr(file_reads, "fits_layout", layout)
        monkeypatch.setattr(os, "scandir", scandir)
        cfg = SimpleNamespace(max_attempts=2, retry_backoff=0.05, park_recheck_seconds=0.1)
        self.metrics = Metrics()
        self.parking = lambda what, root=None: Parking(cfg, self.metrics, stage="watcher",
                                                       what=what, root=root)

    def parked(self, cause: str, name: str = "calstream_parked_items") -> float:
        labels = {"stage": "watcher", "cause": cause}
        if name == "calstream_parked_items":
            labels["root"] = ""
        return self.metrics.registry.get_sample_value(name, labels) or 0


@pytest.mark.parametrize("error, whole_mount", [(errno.EIO, True), (errno.ESTALE, False)],
                         ids=["eio-and-its-directory-too", "stale-handle"])
async def test_a_read_its_mount_fails_parks_the_file_and_never_quarantines_it(
        dirs, monkeypatch, error, whole_mount):
    """Before, a read failing with EIO (a soft mount whose server is gone)
    or ESTALE (a stale handle: mount_gone everywhere else in calstream) was
    counted towards "unreadable": after five tries, a few seconds, the good
    file was quarantined as the data's fault (bad_file), and left there
    once the mount came back. Now it is parked as mount_gone until a read
    answers, then announced."""
    mount = FailingMount(monkeypatch, dirs[0], error, whole_mount=whole_mount)
    rec = Recorder()
    async with running(make(dirs, rec, parking=mount.parking)):
        drop(dirs[0], SICK, uncal_bytes(SICK))
        await wait_until(lambda: mount.parked("mount_gone") == 1, timeout=15)
        await wait_until(lambda: mount.reads_failed >= 8)  # more tries than "unreadable"'s 5
        assert not rec.rejections and not any(dirs[1].glob("*")), "nothing quarantined"
        mount.failing = False  # the mount is back
        await wait_until(lambda: [a.path.name for a in rec.arrivals] == [SICK])
        await wait_until(lambda: mount.parked("mount_gone") == 0)
    assert mount.parked("mount_gone", "calstream_parked_total") == 1 and not rec.rejections


async def test_a_file_failing_eio_on_a_mount_that_answers_is_still_quarantined(dirs, monkeypatch):
    """The second look is what tells the two apart: its directory reads, so
    the file is damaged, and is quarantined as unreadable after its tries."""
    mount = FailingMount(monkeypatch, dirs[0], errno.EIO, whole_mount=False)
    rec = Recorder()
    async with running(make(dirs, rec, parking=mount.parking)):
        drop(dirs[0], SICK, uncal_bytes(SICK))
        await wait_until(lambda: rec.rejections)
    [r] = rec.rejections
    assert "unreadable" in r.reason and r.quarantined_to is not None
    assert mount.parked("mount_gone", "calstream_parked_total") == 0


class SilentMount:
    """Calls ``hold`` wraps block in their real thread while ``silent`` (a
    hard mount gone silent), until ``answer()``; ``returned``: one blocked
    call came back. The watcher's parking, sampled."""

    def __init__(self) -> None:
        self.silent = threading.Event()
        self.answered = threading.Event()
        self.blocked = threading.Event()
        self.returned = False
        cfg = SimpleNamespace(max_attempts=1, retry_backoff=0.05, park_recheck_seconds=0.1)
        self.metrics = Metrics()
        self.parking = lambda what, root=None: Parking(cfg, self.metrics, stage="watcher",
                                                       what=what, root=root)

    def hold(self, real, when=lambda *args, **kw: True):
        def held(*args, **kw):
            if self.silent.is_set() and when(*args, **kw):
                self.blocked.set()
                self.answered.wait(20)  # a bound for a broken test, not a measure
                self.returned = True
            return real(*args, **kw)
        return held

    def answer(self) -> None:
        self.silent.clear()
        self.answered.set()

    def parked(self, cause: str = "inbox_hung", name: str = "calstream_parked_items") -> float:
        labels = {"stage": "watcher", "cause": cause}
        if name == "calstream_parked_items":
            labels["root"] = ""
        return self.metrics.registry.get_sample_value(name, labels) or 0

    def parked_anywhere(self, cause: str = "inbox_hung") -> float:
        return sum(s.value for m in self.metrics.registry.collect()
                   if m.name == "calstream_parked_items" for s in m.samples
                   if s.labels.get("cause") == cause)


async def test_a_start_on_a_silent_mount_is_parked_not_frozen(dirs, monkeypatch):
    """The start made the inbox (and the quarantine) on the event loop
    itself: on a silent mount the whole daemon froze there, before the
    timed listing's turn, with nothing said. Now the making is timed as a
    read: the inbox is parked as inbox_hung, and the start goes on once the
    mount answers."""
    mount = SilentMount()
    monkeypatch.setattr(Watcher, "_make_dirs", mount.hold(Watcher._make_dirs))
    drop(dirs[0], NAME, uncal_bytes())
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=mount.parking)
    w.keeper.check_seconds = 0.1
    mount.silent.set()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await wait_until(lambda: mount.parked() == 1, timeout=10)
            assert not mount.returned, "parked while its mount is silent"
            mount.answer()
            await wait_until(lambda: len(rec.arrivals) == 1 and mount.parked() == 0)
            tg.cancel_scope.cancel()
    finally:
        mount.answer()


async def test_an_inbox_gone_whose_making_again_hangs_is_parked(dirs, monkeypatch):
    """The watch keeper makes a vanished inbox again (an automounter's
    remount): in anyio's threads, untimed, a mount gone silent there held
    the watcher's loop (and a stop) for as long as it stayed silent, and
    nothing was parked. Now it is parked as inbox_hung, and resumes."""
    mount = SilentMount()
    monkeypatch.setattr(Watcher, "_make_dirs", mount.hold(Watcher._make_dirs))
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=mount.parking, rescan_interval=3600.0)
    w.keeper.check_seconds = 0.1
    try:
        async with running(w):
            mount.silent.set()
            dirs[0].rmdir()
            await wait_until(lambda: mount.parked() == 1, timeout=10)
            assert not mount.returned, "parked while its mount is silent"
            mount.answer()
            await wait_until(lambda: dirs[0].is_dir() and mount.parked() == 0)
            drop(dirs[0], NAME, uncal_bytes())
            await wait_until(lambda: len(rec.arrivals) == 1)
    finally:
        mount.answer()


async def test_a_stop_while_a_polling_observer_lists_a_silent_mount_ends(dirs, monkeypatch):
    """A polling observer (the setting for network mounts) lists the inbox
    in its own thread; stopping it waits for that listing. The stop was
    made on the event loop: on a silent mount a stop of the daemon (and a
    watch moved to a remounted inbox) froze it for as long as the mount
    stayed silent. Now the stop is timed, and its threads are left."""
    from watchdog.observers import polling

    mount = SilentMount()
    monkeypatch.setattr(polling, "DirectorySnapshot", mount.hold(polling.DirectorySnapshot))
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, polling=True)
    try:
        async with running(w):
            mount.silent.set()
            with anyio.fail_after(10):  # a bound for a broken test
                while not mount.blocked.is_set():
                    await anyio.sleep(0.02)
        assert not mount.returned, "the stop ended while its mount was still silent"
    finally:
        mount.answer()


async def test_a_move_into_quarantine_on_a_silent_mount_is_parked_in_the_door_s_threads(
        dirs, monkeypatch):
    """The move of a rejected file ran in anyio's shared threads, untimed: on
    a mount gone silent between the file's read and its move it held a
    thread the rest of the daemon shares, and a stop, with nothing shown.
    Now it runs in the door's own threads, is parked past its time, and is
    awaited (a move abandoned would finish unseen): once the mount answers
    the file is quarantined and reported."""
    mount = SilentMount()
    monkeypatch.setattr(Quarantine, "_move", mount.hold(Quarantine._move))
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=mount.parking)
    try:
        async with running(w):
            mount.silent.set()
            (dirs[0] / NAME).write_bytes(b"not a FITS file" * 100)
            await wait_until(lambda: mount.parked_anywhere() == 1, timeout=10)
            assert not mount.returned, "parked while its mount is silent"
            borrowed = anyio.to_thread.current_default_thread_limiter().borrowed_tokens
            assert borrowed == 0, "none of the threads the daemon shares is held"
            mount.answer()
            await wait_until(lambda: rec.rejections and mount.parked_anywhere() == 0)
        [r] = rec.rejections
        assert r.quarantined_to is not None and r.quarantined_to.exists()
        assert not (dirs[0] / NAME).exists()
    finally:
        mount.answer()


async def test_a_start_whose_product_store_does_not_answer_parks_the_file_it_asks_about(
        dirs, monkeypatch):
    """At a start, a file announced before is looked up in the product store
    (has_products) before it is read: in anyio's shared threads, untimed.
    A silent store held the start (the watcher never said it had started),
    the threads the daemon shares, and any stop. Now the look-up is timed:
    the file is parked as store_hung, the start ends, new files are
    announced meanwhile, and the file is recorded once the store answers."""
    first = Recorder()
    async with running(make(dirs, first)):
        drop(dirs[0], NAME, uncal_bytes())
        await wait_until(lambda: first.arrivals)

    mount = SilentMount()
    rec = Recorder(products={NAME.removesuffix("_uncal.fits")})
    rec.has_products = mount.hold(rec.has_products)
    w = make(dirs, rec, read_seconds=0.3, parking=mount.parking)
    mount.silent.set()
    try:
        async with anyio.create_task_group() as tg:
            with anyio.fail_after(10):  # a bound for a broken start, not a measure
                await tg.start(w.run)
            await wait_until(lambda: mount.parked("store_hung") == 1)
            new = NAME.replace("00001", "00003")
            drop(dirs[0], new, uncal_bytes(new))
            await wait_until(lambda: [a.path.name for a in rec.arrivals] == [new])
            mount.answer()
            await wait_until(lambda: w.stats().recorded == 1 and mount.parked("store_hung") == 0)
            tg.cancel_scope.cancel()
    finally:
        mount.answer()
    assert [a.path.name for a in rec.arrivals] == [new], "recorded, not announced again"


async def test_a_stat_its_mount_fails_parks_the_file_rather_than_giving_it_up(
        dirs, monkeypatch):
    """A stat of a file (its look, or the one after its reads) failing with
    ESTALE was an "unexpected error": eight of them, a few minutes of a
    mount gone, and the file was given up, "left in the inbox until it
    changes", and as it had been seen the rescans left it alone: never
    announced after the mount came back. Now it is parked as mount_gone."""
    failing = threading.Event()
    real_stat, real_lstat = os.stat, os.lstat

    def failing_stat(real):
        def stat(path, *args, **kw):
            if failing.is_set() and os.fspath(path).endswith(SICK):
                raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), os.fspath(path))
            return real(path, *args, **kw)
        return stat

    real_layout = file_reads.fits_layout

    def layout(path, *args, **kw):  # the mount goes stale as the file is read
        if path.name == SICK:
            failing.set()
        return real_layout(path, *args, **kw)

    monkeypatch.setattr(os, "stat", failing_stat(real_stat))
    monkeypatch.setattr(os, "lstat", failing_stat(real_lstat))
    monkeypatch.setattr(file_reads, "fits_layout", layout)
    mount = FailingMount.__new__(FailingMount)  # its parking only
    cfg = SimpleNamespace(max_attempts=2, retry_backoff=0.05, park_recheck_seconds=0.1)
    mount.metrics = Metrics()
    parking = lambda what, root=None: Parking(cfg, mount.metrics, stage="watcher",  # noqa: E731
                                              what=what, root=root)
    rec = Recorder()
    w = make(dirs, rec, parking=parking)
    async with running(w):
        drop(dirs[0], SICK, uncal_bytes(SICK))
        await wait_until(lambda: mount.parked("mount_gone") == 1, timeout=10)
        assert w.stats().errors == 0, "not an unexpected error"
        monkeypatch.setattr(file_reads, "fits_layout", real_layout)
        failing.clear()  # the mount is back
        await wait_until(lambda: [a.path.name for a in rec.arrivals] == [SICK])
        await wait_until(lambda: mount.parked("mount_gone") == 0)


async def test_a_move_a_stop_abandoned_that_ends_after_it_is_reported_at_the_next_start(
        dirs, monkeypatch):
    """A stop while a move into quarantine hung on a silent mount abandons
    it (a stop must end); the move ended after, once the mount answered.
    The file then lay in quarantine with its note and no dead letter, and
    nothing sent one: it had left the inbox. Now its mark says its letter
    was never acknowledged, and the next start sends it, once."""
    mount = SilentMount()
    monkeypatch.setattr(Quarantine, "_move", mount.hold(Quarantine._move))
    rec = Recorder()
    try:
        async with running(make(dirs, rec, read_seconds=0.3, parking=mount.parking)):
            mount.silent.set()
            (dirs[0] / NAME).write_bytes(b"not a FITS file" * 100)
            await wait_until(lambda: mount.parked_anywhere() == 1, timeout=10)
        mount.answer()  # after the stop: the abandoned move ends now
        await wait_until(lambda: not (dirs[0] / NAME).exists(), timeout=10)
    finally:
        mount.answer()
    quarantined = dirs[1] / NAME
    await wait_until(lambda: (dirs[1] / (NAME + ".reason.txt")).exists(), timeout=10)
    assert quarantined.exists() and not rec.rejections, "in quarantine, and reported by none"

    again = Recorder()
    async with running(make(dirs, again)):
        await wait_until(lambda: again.rejections, timeout=10)
        await wait_until(lambda: not (dirs[1] / (NAME + ".unreported")).exists(), timeout=10)
    [r] = again.rejections
    assert r.quarantined_to == quarantined and "not a FITS file" in r.reason
    assert r.path == dirs[0] / NAME and r.exposure_id == "jw01234001001_02101_00001_nrcb1"

    third = Recorder()  # once: the next start sends nothing
    async with running(make(dirs, third)):
        pass
    assert not third.rejections


async def test_a_copy_into_quarantine_a_stop_cut_off_is_undone_at_the_next_start(dirs):
    """A move to a quarantine on another filesystem copies, then unlinks the
    inbox's file. A process stopped mid-copy left a partial copy under the
    file's quarantine name, beside its note, and the file in the inbox: the
    start quarantined it again as NAME.1, and the half copy stayed for ever,
    looking like the evidence. Now the copy is written under its own name
    (``.partial``) and renamed onto the claim once whole; at the next start
    what a cut-off copy left (claim, note, mark, partial copy; here as a
    killed process leaves them) is removed, and the file, still in the
    inbox, is judged and quarantined afresh under its own name."""
    inbox, quarantine = dirs[0], dirs[1]
    data = b"not a FITS file" * 100
    (inbox / NAME).write_bytes(data)
    quarantine.mkdir()
    (quarantine / NAME).write_bytes(b"")  # the claim
    (quarantine / (NAME + ".reason.txt")).write_text(
        f"reason: not a FITS file\nfile: {inbox / NAME}\nexposure_id: -\ndigest: -\n")
    (quarantine / (NAME + ".unreported")).write_text("its dead letter is not acknowledged yet\n")
    (quarantine / (NAME + ".partial")).write_bytes(data[:700])

    rec = Recorder()
    async with running(make(dirs, rec)):
        await wait_until(lambda: rec.rejections, timeout=10)
        await wait_until(lambda: not (quarantine / (NAME + ".unreported")).exists(), timeout=10)
    [r] = rec.rejections
    assert r.quarantined_to == quarantine / NAME and (quarantine / NAME).read_bytes() == data
    assert sorted(p.name for p in quarantine.iterdir()) == [NAME, NAME + ".reason.txt"]


def test_a_move_to_another_filesystem_copies_then_renames_onto_the_claim(dirs, monkeypatch):
    """The cross-device path (EXDEV, forced here): the copy is whole under
    its own name before it takes the claim's, and the inbox's file goes
    last; the mark stays until the dead letter is acknowledged."""
    from calstream.daemon.doers.inbox import quarantine as module

    inbox, quarantine = dirs[0], dirs[1]
    data = b"not a FITS file" * 100
    (inbox / NAME).write_bytes(data)
    real = os.replace

    def across(src, dst):
        if os.fspath(src) == os.fspath(inbox / NAME):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real(src, dst)
    monkeypatch.setattr(module.os, "replace", across)
    q = Quarantine(quarantine, None, None, None, None)
    dest = q._move(inbox / NAME, "not a FITS file", None, None, 0.0)
    assert dest == quarantine / NAME and dest.read_bytes() == data
    assert not (inbox / NAME).exists()
    assert sorted(p.name for p in quarantine.iterdir()) == [
        NAME, NAME + ".reason.txt", NAME + ".unreported"]
