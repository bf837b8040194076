"""The watcher's ledger (sqlite in the work directory) on a work directory
gone silent (a hard NFS mount whose server is away): its calls ran in
anyio's threads, which cannot be abandoned. Real sqlite, real files, real
threads held until the test lets them go. No broker."""

import anyio
import pytest

from calstream.daemon.doers.inbox import ledger as ledger_module

from .test_watcher import NAME, Recorder, dirs, drop, make, running, uncal_bytes, wait_until
from .test_watcher_sick_storage import SilentMount

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(120)]
__all__ = ["dirs"]  # the fixture, used by name


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_a_start_whose_ledger_does_not_answer_is_parked_and_goes_on(dirs, monkeypatch):
    """The ledger's opening held the watcher's start, unseen, for as long
    as the work directory was silent (and the daemon's start with it: the
    roles after the watcher never started). Now it is parked as
    work_dir_hung, and the start goes on once the directory answers."""
    mount = SilentMount()
    monkeypatch.setattr(ledger_module, "_connected", mount.hold(ledger_module._connected))
    drop(dirs[0], NAME, uncal_bytes())
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=mount.parking)
    mount.silent.set()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            await wait_until(lambda: mount.parked("work_dir_hung") == 1, timeout=10)
            assert not mount.returned, "parked while its work directory is silent"
            mount.answer()
            await wait_until(lambda: len(rec.arrivals) == 1 and mount.parked("work_dir_hung") == 0)
            tg.cancel_scope.cancel()
    finally:
        mount.answer()


class HeldConnection:
    """A sqlite connection whose queries ``mount`` holds while it is silent."""

    def __init__(self, db, mount: SilentMount) -> None:
        self.db, self.execute = db, mount.hold(db.execute)

    def __getattr__(self, name):
        return getattr(self.db, name)


async def test_a_ledger_query_that_hangs_parks_its_file_and_a_stop_still_ends(dirs):
    """A query of the ledger on a silent work directory held its file's step
    and, at a stop, the daemon: the watcher's end waited for the thread (and
    then for the ledger's close behind it) for as long as the directory was
    silent. Now the file is parked as work_dir_hung and the stop ends with
    the directory still silent, its thread left."""
    mount = SilentMount()
    rec = Recorder()
    w = make(dirs, rec, read_seconds=0.3, parking=mount.parking)
    try:
        async with running(w):
            ledger = w._announcer.ledger
            ledger._db = HeldConnection(ledger._db, mount)
            mount.silent.set()
            drop(dirs[0], NAME, uncal_bytes())
            await wait_until(lambda: mount.parked("work_dir_hung") == 1, timeout=10)
            assert not rec.arrivals
        assert not mount.returned, "the stop ended while the work directory was still silent"
    finally:
        mount.answer()
