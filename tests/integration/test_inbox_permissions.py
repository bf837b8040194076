"""Permission denied opening an inbox file: the file's fault, or the mount's?
One file refused while its neighbours open is the file's (quarantined as
unreadable after its tries); every file refused is the mount's (an NFS id
mapping lost, a volume mounted with the wrong owner): parked, never
quarantined, announced once it reads. The kernel's EACCES is raised at
os.open of the inbox's files (the tests run as root, whom modes do not
stop). Real files, a real watcher; no broker."""

import errno
import os
from types import SimpleNamespace

import pytest

from calstream.daemon.doers.parking import Parking
from calstream.daemon.operations.metrics import Metrics

from .test_watcher import NAME, Recorder, dirs, drop, make, running, uncal_bytes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(120)]
__all__ = ["dirs"]  # the fixture, used by name

OTHER = NAME.replace("00001", "00002")


@pytest.fixture
def anyio_backend():
    return "asyncio"


class Refusing:
    """os.open of the inbox's files (not hidden ones: the door's probe)
    refused with EACCES while ``on``: of every file, or of ``only``."""

    def __init__(self, monkeypatch, inbox, only: str | None = None) -> None:
        self.on, self.refusals = True, 0
        real = os.open

        def refusing(path, flags, *args, **kw):
            name = os.path.basename(os.fspath(path))
            if (self.on and os.path.dirname(os.fspath(path)) == os.fspath(inbox)
                    and not name.startswith(".") and only in (None, name)):
                self.refusals += 1
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
            return real(path, flags, *args, **kw)

        monkeypatch.setattr(os, "open", refusing)
        cfg = SimpleNamespace(max_attempts=2, retry_backoff=0.05, park_recheck_seconds=0.1)
        self.metrics = Metrics()
        self.parking = lambda what, root=None: Parking(cfg, self.metrics, stage="watcher",
                                                       what=what, root=root)

    def parked(self, cause: str = "mount_gone") -> float:
        return self.metrics.registry.get_sample_value(
            "calstream_parked_items", {"stage": "watcher", "cause": cause, "root": ""}) or 0


async def test_every_file_refused_is_the_mount_s_and_parked_not_quarantined(dirs, monkeypatch):
    """Before, each file was counted unreadable, and after five tries (a few
    seconds) quarantined as bad_file: a whole inbox of good deliveries
    dead-lettered for a mount's permissions, left in quarantine once fixed."""
    inbox = dirs[0]
    refusing = Refusing(monkeypatch, inbox)
    rec = Recorder()
    async with running(make(dirs, rec, parking=refusing.parking)):
        drop(inbox, NAME, uncal_bytes(NAME))
        drop(inbox, OTHER, uncal_bytes(OTHER))
        await wait_until(lambda: refusing.parked() == 2, timeout=15)
        await wait_until(lambda: refusing.refusals >= 20)  # more tries than "unreadable"'s 5
        assert not rec.rejections and not any(dirs[1].glob("*")), "nothing quarantined"
        refusing.on = False  # the mount's permissions mended
        await wait_until(lambda: sorted(a.path.name for a in rec.arrivals) == [NAME, OTHER])
        await wait_until(lambda: refusing.parked() == 0)


async def test_one_file_refused_among_neighbours_that_open_is_the_file_s(dirs, monkeypatch):
    """The neighbours open: the mount serves this user, the file's mode is
    its own fault, and it is quarantined as unreadable after its tries."""
    inbox = dirs[0]
    refusing = Refusing(monkeypatch, inbox, only=OTHER)
    rec = Recorder()
    async with running(make(dirs, rec, parking=refusing.parking)):
        drop(inbox, NAME, uncal_bytes(NAME))
        await wait_until(lambda: rec.arrivals)
        drop(inbox, OTHER, uncal_bytes(OTHER))
        await wait_until(lambda: rec.rejections, timeout=15)
    [r] = rec.rejections
    assert r.path.name == OTHER and "unreadable" in r.reason
    assert refusing.parked() == 0
