"""The door on storage that fails rather than hangs: a soft network mount
whose server is gone answers every read with EIO, a stale handle with
ESTALE. Real files, real observers; the failing reads are made to fail
in the door's own threads. No broker."""

import errno
import os
from types import SimpleNamespace

import pytest

from calstream.daemon.doers.inbox import file_reads
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
