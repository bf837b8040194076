"""A bad file whose move into quarantine is refused for now (a full or
read-only quarantine, a read-only inbox) stays in the inbox, parked, and is
moved once the directory takes it. Real files, a real watcher and its
parking; the refusals are the kernel's errors, raised where the kernel would
raise them. No broker."""

import errno
import os
from types import SimpleNamespace

import pytest

from calstream.daemon.doers import file_reads
from calstream.daemon.doers.inbox import quarantine as quarantine_module
from calstream.daemon.doers.inbox.quarantine import Quarantine
from calstream.daemon.doers.parking import Parking
from calstream.daemon.operations.metrics import Metrics

from .test_watcher import NAME, Recorder, dirs, make, running, uncal_bytes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(120)]
__all__ = ["dirs"]  # the fixture, used by name


@pytest.fixture
def anyio_backend():
    return "asyncio"


def parking(metrics: Metrics):
    cfg = SimpleNamespace(max_attempts=1, retry_backoff=0.02, park_recheck_seconds=0.05)
    return lambda what, root=None: Parking(cfg, metrics, stage="watcher", what=what, root=root)


def parked(metrics: Metrics, cause: str, root) -> float:
    return metrics.registry.get_sample_value(
        "calstream_parked_items", {"stage": "watcher", "cause": cause, "root": str(root)}) or 0


async def test_a_parked_move_is_not_read_and_hashed_again_at_each_re_check(dirs, monkeypatch):
    """Judged bad (its header disagrees with its name), its move refused by a
    read-only quarantine: at every re-check of its park the file was read
    and hashed again, though unchanged (a large file, every
    park_recheck_seconds, for as long as the quarantine stayed read-only).
    Now it is moved as judged, unread, once the quarantine takes it."""
    inbox, quarantine = dirs[0], dirs[1]
    refusing = {"on": True, "tries": 0}
    real_move, real_digest = Quarantine._move, file_reads.digest_of
    hashed: list[str] = []

    def move(self, path, *args, **kw):
        if refusing["on"]:
            refusing["tries"] += 1
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(quarantine))
        return real_move(self, path, *args, **kw)

    def digest_of(path, *args, **kw):
        hashed.append(path.name)
        return real_digest(path, *args, **kw)

    monkeypatch.setattr(Quarantine, "_move", move)
    monkeypatch.setattr(file_reads, "digest_of", digest_of)
    metrics, rec = Metrics(), Recorder()
    async with running(make(dirs, rec, parking=parking(metrics))):
        (inbox / NAME).write_bytes(uncal_bytes(NAME, DETECTOR="NRCA1"))  # not the name's
        await wait_until(lambda: refusing["tries"] >= 6, timeout=15)  # parked, re-checked
        assert parked(metrics, "read_only", quarantine) == 1
        refusing["on"] = False
        await wait_until(lambda: rec.rejections, timeout=15)
    [r] = rec.rejections
    assert r.quarantined_to == quarantine / NAME and "NRCA1" in r.reason and r.digest
    assert hashed == [NAME], "hashed once, for its judgement; not again at each re-check"


async def test_a_read_only_inbox_parks_the_move_under_the_inbox_not_the_quarantine(
        dirs, monkeypatch):
    """A quarantine on another filesystem, the inbox's read-only: the move
    copied the whole file, failed to remove it from the inbox (EROFS), threw
    the copy away, and was parked with root= the quarantine, which was
    writable: the alert sent the operator to the wrong disk, and every
    re-check copied the file again. Now the inbox's read-only mount is
    found before the copy, and named."""
    inbox, quarantine = dirs[0], dirs[1]
    real_replace, real_unlink, real_statvfs = os.replace, os.unlink, os.statvfs
    copies: list[str] = []
    real_copy = quarantine_module._copy_aside

    def across(src, dst):  # the quarantine is on another filesystem
        if os.path.dirname(os.fspath(src)) == os.fspath(inbox):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real_replace(src, dst)

    def unlink(path, *args, **kw):  # the inbox's mount is read-only
        if os.path.dirname(os.fspath(path)) == os.fspath(inbox):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_unlink(path, *args, **kw)

    def statvfs(path):
        st = real_statvfs(path)
        if os.fspath(path) != os.fspath(inbox):
            return st
        return SimpleNamespace(f_flag=st.f_flag | os.ST_RDONLY)

    def copy_aside(path, partial):
        copies.append(path.name)
        return real_copy(path, partial)

    monkeypatch.setattr(quarantine_module.os, "replace", across)
    monkeypatch.setattr(quarantine_module.os, "unlink", unlink)
    monkeypatch.setattr(quarantine_module.os, "statvfs", statvfs)
    monkeypatch.setattr(quarantine_module, "_copy_aside", copy_aside)
    metrics, rec = Metrics(), Recorder()
    async with running(make(dirs, rec, parking=parking(metrics))):
        (inbox / NAME).write_bytes(b"not a FITS file" * 100)
        await wait_until(lambda: parked(metrics, "read_only", inbox) == 1, timeout=15)
        assert parked(metrics, "read_only", quarantine) == 0
        assert not copies, "no copy made to be thrown away"
    assert not rec.rejections and (inbox / NAME).exists()
