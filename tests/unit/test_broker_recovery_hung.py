"""Putting back what a broker lost (broker_recovery.py), at start and after
the broker's return, on a work directory or product store whose storage
stops answering (a hard NFS mount whose server is away): its looks at the
re-publishing markers, its reads of the dead-letter ledger and of the noted
places ran in anyio's threads, untimed, so the start's step stood "trying"
for ever (or the supervisor's putting back after a broker's return), and a
stop waited for the thread. Now each call past its time raises ReadHung
(work_dir_hung, store_hung: the start's step parks and tries again), and
while it has not returned every try is refused at once, no second thread.
(A real thread held until the test lets it go, real files; the producer is
a stand-in, as in test_noted_places.py: no broker is asked before the
storage answers.)"""

from __future__ import annotations

import os
import threading

import anyio
import pytest

from calstream.daemon.doers import broker_recovery
from calstream.daemon.doers.file_reads import FileReads, ReadHung
from calstream.daemon.doers.kafka.publisher import Publisher
from calstream.daemon.doers.product_store import ProductStore
from calstream.daemon.operations.config import Config
from calstream.daemon.operations.metrics import Metrics
from calstream.topics.catalog import Topics

from .test_forged_work_records import _Producer

pytestmark = pytest.mark.anyio
HELD = 10.0  # how long a silent call is held at most: a bound for a broken test


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def silent(monkeypatch):
    """Storage under the directories in ``under``, silent until ``answers``
    is set: a look at (lstat) or a listing of (scandir) anything there
    blocks, in the thread making it."""
    under, answers, blocked, returned = [], threading.Event(), [], []

    def held(real):
        def call(path, *args, **kw):
            if any(os.fspath(path).startswith(os.fspath(u)) for u in under) \
                    and not answers.is_set():
                blocked.append(threading.current_thread().name)
                answers.wait(HELD)
                returned.append(path)
            return real(path, *args, **kw)
        return call

    monkeypatch.setattr(os, "lstat", held(os.lstat))
    monkeypatch.setattr(os, "scandir", held(os.scandir))
    yield under, answers, blocked, returned
    answers.set()


def setup(tmp_path, roles):
    work, products = tmp_path / "work", tmp_path / "products"
    products.mkdir()  # a store that has been written to (an empty one is not listed)
    cfg = Config(work_dir=work, products=products, roles=roles)
    publisher = Publisher(_Producer(), Topics(), Metrics(), role="+".join(roles), work_dir=work)
    return cfg, publisher, ProductStore(products), FileReads(1, 0.2)


async def test_dead_letters_put_back_on_a_silent_work_dir_are_refused_in_time(silent, tmp_path):
    under, answers, blocked, returned = silent
    cfg, publisher, _, reads = setup(tmp_path, ("detector1",))
    under.append(cfg.work_dir)
    with anyio.fail_after(HELD / 2):  # untimed, each try waited for the mount
        for _ in range(2):  # the start's step tries again
            with pytest.raises(ReadHung) as hung:
                await broker_recovery.recover_dead_letters(cfg, Topics(), publisher,
                                                           reads=reads)
            assert hung.value.cause == "work_dir_hung"
            assert "re-publishing marker's look hung" in str(hung.value)
    assert len(blocked) == 1 and not returned  # one thread on the mount, not one a try
    answers.set()  # the mount answers: the look left behind returns
    with anyio.fail_after(HELD / 2):
        while reads.hung():
            await anyio.sleep(0.02)


async def test_product_events_put_back_from_a_silent_store_are_refused_in_time(silent,
                                                                             tmp_path):
    under, answers, blocked, returned = silent
    cfg, publisher, store, reads = setup(tmp_path, ("planner",))
    under.append(cfg.products)
    with anyio.fail_after(HELD / 2):  # untimed, it waited for the store
        with pytest.raises(ReadHung) as hung:  # emptied: no broker is asked first
            await broker_recovery.recover_product_events(cfg, Topics(), store, publisher,
                                                         emptied=True, reads=reads)
    assert hung.value.cause == "store_hung" and blocked and not returned
