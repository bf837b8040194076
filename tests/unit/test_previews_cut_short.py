"""A drawing of previews cut short with its daemon is judged as a run is
(work_item_runs.py): its start in a worker is marked beside its pending
entry, and an adopting daemon drops an entry whose drawing was cut short
alone, and draws one cut short beside other runs alone. Before, an entry
was adopted and drawn again at every start, however its drawing had ended:
a drawing that takes the container down (a picture of a huge product) did
so at every restart, for ever. A graceful stop's cancelled drawing is not
cut short: its mark goes, its entry stays. Real files; a real runner and
real worker processes for the marks."""

from __future__ import annotations

import json
import logging
import socket

import anyio
import pytest

from calstream.daemon.doers.pending_previews import PENDING
from tests.unit.test_pending_previews import (
    _entries,
    _owner_directory,
    _pending,
    _product,
)
from tests.unit.test_preview_gate import _until
from tests.unit.test_runner_recheck import _runner_and_item

# After an entry's name: its drawing's mark (pending_previews.DRAWING).
DRAWING = ".drawing"


@pytest.fixture
def anyio_backend():
    return "asyncio"


def test_an_entry_whose_drawing_was_cut_short_alone_is_dropped_beside_others_a_suspect(
        tmp_path, caplog):
    from calstream.daemon.doers.product_store import ProductStore

    store = ProductStore(tmp_path / "products")
    good = json.dumps({"outputs": [_product(store)], "log_context": {"exposure_id": "x"}})
    gone = _owner_directory(store, "c" * 16, host=socket.gethostname(), pid=2 ** 22 + 7)
    marks = {1: '{"alone": true}', 2: '{"alone": false}', 3: None, 4: "\x00 not JSON"}
    for n, mark in marks.items():
        (gone / f"{n:064x}.json").write_text(good)
        if mark is not None:
            (gone / f"{n:064x}.json{DRAWING}").write_text(mark)
    (gone / f"{9:064x}.json{DRAWING}").write_text('{"alone": false}')  # its entry is done
    pending = _pending(store)
    with caplog.at_level(logging.WARNING, logger="calstream.previews"):
        adopted, refused = pending.adopt()
    assert refused == 1
    assert sorted(int(e, 16) for e, _, _ in adopted) == [2, 3, 4]
    assert pending.suspects == {f"{2:064x}", f"{4:064x}"}  # drawn alone
    assert "its drawing was cut short with its daemon, alone" in caplog.text
    assert "drawn again alone" in caplog.text
    assert not gone.exists()  # emptied, the orphan mark with it
    # A suspect's mark moved with its entry: cut short again, it is judged again.
    assert (pending.mine / f"{2:064x}.json{DRAWING}").exists()
    pending.done(f"{2:064x}")
    assert not (pending.mine / f"{2:064x}.json{DRAWING}").exists()
    assert f"{2:064x}" not in pending.suspects


def draws_until(previews):
    """A drawing that holds its worker until its picture's path exists."""
    from tests.pool_tasks import wait_for_file

    wait_for_file(previews[0]["path"], timeout=300)
    return {"made": [], "failed": {}}


@pytest.mark.anyio
async def test_a_drawing_is_marked_while_it_runs_and_a_stop_leaves_no_mark(
        tmp_path, monkeypatch):
    from calstream.daemon.doers import preview_runner

    monkeypatch.setattr(preview_runner, "PREVIEW_TASK",
                        "tests.unit.test_previews_cut_short:draws_until")
    metrics, bus, store, pool, runner, item = _runner_and_item(tmp_path)
    item.task = "tests.pool_tasks:write_rate_image"

    def marks():
        return sorted((store.top / PENDING / "detector1").glob(f"*/*{DRAWING}"))

    try:
        with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
            async with anyio.create_task_group() as tg:
                runner.background = tg
                await runner.run(item)
                await _until(lambda: marks())  # the drawing holds its worker
                [mark] = marks()
                assert json.loads(mark.read_text()) == {"alone": False}
                [entry] = _entries(store)
                assert mark.name == entry.name + DRAWING
                tg.cancel_scope.cancel()  # the daemon's graceful stop
    finally:
        pool.close()
    assert _entries(store) == [entry]  # for the next daemon to draw
    assert marks() == []  # not cut short
