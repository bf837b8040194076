"""A whole file among thousands of short ones: the door still serves it.

Each file found short (a header declaring data that never comes: a
downlink cut off, or junk) was looked at every look interval until its
``incomplete_timeout``: with 2,000 of them the watcher's event loop was
kept busy with looks and a whole file dropped among them waited seconds
(5,000: not announced within 20 s). A short file that does not change
needs no look that often: a write to it is an event, looked at at once."""

import anyio
import pytest

from calstream.daemon.deciders.inbox_file import INCOMPLETE_LOOK_MAX
from calstream.daemon.doers.inbox.watcher import STEPS_AT_ONCE

from .test_watcher import NAME, Recorder, dirs, drop, make, running, uncal_bytes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.anyio, pytest.mark.timeout(300)]
__all__ = ["dirs"]  # the fixture, used by name

CROWD = 2000


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _short_header() -> bytes:
    cards = ["SIMPLE  =                    T", "BITPIX  =                   16",
             "NAXIS   =                    1", "NAXIS1  =                 1000", "END"]
    return b"".join(c.ljust(80).encode() for c in cards).ljust(2880)


async def test_a_whole_file_among_thousands_of_short_ones_is_announced_promptly(dirs):
    inbox = dirs[0]
    rec = Recorder()
    w = make(dirs, rec, incomplete_timeout=600.0)
    async with running(w):
        short = _short_header()
        for i in range(CROWD):
            (inbox / NAME.replace("00001", f"{i + 10:05d}")).write_bytes(short)

        def found_short() -> int:  # each file's structure read once: all of them waiting
            return sum(1 for t in w._tracks.values() if t.state.incomplete_sig is not None)

        await wait_until(lambda: found_short() == CROWD, timeout=120)
        await anyio.sleep(8)  # the crowd waiting, as it would for minutes
        looks = _count_looks(w)
        await anyio.sleep(2)
        per_file_second = looks[0] / CROWD / 2
        drop(inbox, NAME, uncal_bytes())
        # A bound for a broken door, not a measure: alone it takes ~20 ms.
        took = await wait_until(lambda: rec.arrivals, timeout=INCOMPLETE_LOOK_MAX + 4)
    assert [a.exposure_id for a in rec.arrivals] == [NAME.removesuffix("_uncal.fits")]
    assert rec.rejections == [] and took < INCOMPLETE_LOOK_MAX + 4
    # Unchanged for 8 s or more: a look every 2 s at most (it was every 0.1 s).
    assert per_file_second <= 0.5


def _count_looks(w) -> list[int]:
    """Counts the stats the watcher makes from now on, in the list's one item."""
    counted = [0]
    sig = w.reads.sig

    async def counting(path):
        counted[0] += 1
        return await sig(path)

    w.reads.sig = counting
    return counted


async def test_a_restart_reads_no_file_it_announced_whose_products_exist(dirs):
    """An inbox nobody archives holds every exposure since it was last
    cleaned. At each start the door read each of them again (its layout,
    its header) and wrote its ledger row again (a synced sqlite write), all
    before it looked at any new arrival: with 2,000 such files a file
    dropped during the start waited ~30 s, with a week's files minutes. A
    file the ledger knows by its stat, whose products exist, is done: one
    ledger read and the product look-up, no read of the file, no write."""
    inbox = dirs[0]
    names = [NAME.replace("00001", f"{i + 10:05d}") for i in range(50)]
    first = Recorder()
    async with running(make(dirs, first)):
        for n in names:
            drop(inbox, n, uncal_bytes(n))
        await wait_until(lambda: len(first.arrivals) == len(names), timeout=120)
    done = {n.removesuffix("_uncal.fits") for n in names}
    rec = Recorder(products=done)
    w = make(dirs, rec)
    reads: list[str] = []
    for name in ("layout", "identity", "digest"):
        read = getattr(w.reads, name)

        async def counted(path, *size, read=read, name=name):
            reads.append(f"{name} {path.name}")
            return await read(path, *size)

        setattr(w.reads, name, counted)
    async with running(w):
        drop(inbox, NAME, uncal_bytes())
        await wait_until(lambda: rec.arrivals and w.stats().pending == 0, timeout=60)
        await w._rescan()  # remembered as handled: a rescan does not take them up again
        assert w.stats().pending == 0
    assert reads == [f"{r} {NAME}" for r in ("layout", "identity", "digest")]
    assert [a.exposure_id for a in rec.arrivals] == [NAME.removesuffix("_uncal.fits")]
    assert w.stats().recorded == len(names)


async def test_a_start_takes_up_its_files_a_bounded_number_at_a_time(dirs):
    """The start-up scan began a step for every file in the inbox at once:
    each waiting step held ~10 kB (20,000 short files: 190 MB more at the
    start; an inbox of months, gigabytes) though only a few files are read
    at a time (file_reads.py). Now a bounded number of steps at a time
    works through the listing, in the order it was found."""
    inbox = dirs[0]
    short = _short_header()
    count = STEPS_AT_ONCE * 4
    for i in range(count):
        (inbox / NAME.replace("00001", f"{i + 10:05d}")).write_bytes(short)
    w = make(dirs, Recorder(), incomplete_timeout=600.0)
    in_flight, most = [0], [0]
    step = w._step

    async def counted(t):
        if t.state.sig is not None:  # not a first look: the loop's, once started
            return await step(t)
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            await step(t)
        finally:
            in_flight[0] -= 1

    w._step = counted
    async with running(w):
        assert w.stats().pending == count  # every one looked at, each waiting to be whole
    assert 0 < most[0] <= STEPS_AT_ONCE


async def test_a_burst_after_the_start_is_looked_at_a_bounded_number_at_a_time(dirs):
    """After the start the loop began a step for every file of a burst at
    once (thousands dropped together, a remounted inbox's listing): each
    waiting step held ~10 kB, and the watch keeper's stat of the inbox, made
    in the loop, waited behind all of their stats for the door's threads.
    Now the loop keeps STEPS_AT_ONCE under way, the rest in the order found."""
    inbox = dirs[0]
    short = _short_header()
    count = STEPS_AT_ONCE * 4
    w = make(dirs, Recorder(), incomplete_timeout=600.0)
    in_flight, most = [0], [0]
    look = w.reads.look

    async def slow_look(path, roots):  # slow storage: every step is under way a while
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            await anyio.sleep(0.5)
            return await look(path, roots)
        finally:
            in_flight[0] -= 1

    w.reads.look = slow_look
    async with running(w):
        for i in range(count):
            (inbox / NAME.replace("00001", f"{i + 10:05d}")).write_bytes(short)
        await wait_until(lambda: w.stats().seen == count, timeout=60)
    assert 0 < most[0] <= STEPS_AT_ONCE
