"""A FIFO, a device or an oversized file where calstream reads one of its
records (steps/regular_files.py): each door says "none" at once and goes
on. Before, ``read_text`` on a FIFO waited for a writer for ever (the work
item's lookup, the planner's start, every CLI command) and on a link to
``/dev/zero`` read until memory ran out. Each reader runs in a thread
here, so that the old code fails the test instead of hanging it."""

import os
import threading
from pathlib import Path

import pytest

from calstream.daemon.doers import planner_snapshots
from calstream.daemon.doers.planner_ledger import PlannerLedger
from calstream.daemon.doers.product_store import PROMOTIONS, ProductStore
from calstream.daemon.doers.work_claims import FREE, WorkClaims
from calstream.daemon.operations import console_data, deployment
from calstream.steps import regular_files
from calstream.steps.regular_files import NotARegularFile, read_regular_file

NAME = "jw01234001001_02101_00001_nrcb1"


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _zero(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/dev/zero")
    return path


def _answers(read, *fifos: Path):
    """read()'s result, or a failure if it is still reading after 10 s."""
    out: list = []
    reader = threading.Thread(target=lambda: out.append(read()), daemon=True)
    reader.start()
    reader.join(10)
    stuck = reader.is_alive()
    for fifo in fifos:  # let a reader stuck in open() go (the code before the fix)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert not stuck, "the reader waited on a file that is not a regular file"
    return out[0]


def test_a_provenance_record_that_is_a_fifo_means_not_done(tmp_path):
    # (A link in its place is refused by the store before any read: ProductStore.inside.)
    store = ProductStore(tmp_path / "products")
    record = _fifo(store.directory("01234", "001") / ".provenance" / f"{NAME}.detector1.json")
    assert _answers(lambda: store.lookup("01234", "001", name=NAME, stage="detector1"),
                    record) is None


def test_a_claim_that_is_a_fifo_names_no_owner(tmp_path):
    claims = WorkClaims(tmp_path, heartbeat_seconds=1, stale_seconds=60)
    claim = _fifo(claims.path("a" * 64, 1))
    verdict, _, owner = _answers(lambda: claims.look(claim), claim)
    assert owner is None and verdict != FREE  # held by nobody known: not taken over at once


@pytest.mark.parametrize("special", [_fifo, _zero], ids=["fifo", "dev_zero"])
def test_planner_files_that_are_no_files_are_left_out(tmp_path, special):
    kept = special(tmp_path / "planner" / "holds" / f"{NAME}.json")
    assert _answers(lambda: PlannerLedger(tmp_path).kept("holds"), kept) == []
    snapshot = _fifo(planner_snapshots.snapshot_path(tmp_path))
    assert _answers(lambda: planner_snapshots.read(tmp_path), snapshot) is None


def test_a_deployment_record_that_is_a_fifo_is_no_record(tmp_path):
    record = _fifo(deployment.record_path(tmp_path))
    assert _answers(lambda: deployment.read(tmp_path), record) is None


def test_a_promotion_record_that_is_a_fifo_is_left_out_of_the_console(tmp_path):
    store = ProductStore(tmp_path / "products")
    promotion = _fifo(store.top / PROMOTIONS / "0001.json")
    assert _answers(lambda: console_data._promotions(store), promotion) == []


def test_a_record_larger_than_the_bound_is_not_read(tmp_path, monkeypatch):
    big = tmp_path / "big.json"
    big.write_bytes(b"{}" + b" " * 100)
    assert read_regular_file(big, limit=200) == b"{}" + b" " * 100
    with pytest.raises(NotARegularFile, match="more than"):
        read_regular_file(big, limit=50)
    # The readers' default bound, made small: the deployment record is refused.
    monkeypatch.setattr(regular_files, "RECORD_LIMIT", 10)
    monkeypatch.setattr(regular_files.read_regular_file, "__kwdefaults__", {"limit": 10})
    monkeypatch.setattr(regular_files.read_regular_text, "__kwdefaults__", {"limit": 10})
    deployment.record_path(tmp_path).write_text('{"pid": 1, "metrics_address": "h:1"}')
    assert deployment.read(tmp_path) is None


def test_a_refusal_is_no_infrastructure_fault(tmp_path):
    """No errno: nothing parks or retries for a file that waiting will not change."""
    from calstream.steps.failures import infrastructure_cause

    with pytest.raises(NotARegularFile) as refused:
        read_regular_file(_fifo(tmp_path / "x.json"))
    assert infrastructure_cause(refused.value) is None


# -- files an operator names on the command line --------------------------------
# ``calstream run --config FILE`` (and every command's ``--config``) and
# ``calstream plan load FILE`` read the file named. Before, a FIFO there (a
# ``<(...)`` that nobody writes, a mistyped path to a pipe) or ``/dev/zero``
# held the command for ever, and a config of bytes that are not UTF-8 ended
# it with a traceback: now each is one refusal naming the file.

@pytest.mark.parametrize("special", [_fifo, _zero], ids=["fifo", "dev_zero"])
def test_a_config_file_that_is_no_file_is_refused_at_once(tmp_path, special):
    from calstream.daemon.operations import config

    path = special(tmp_path / "calstream.toml")

    def load():
        try:
            config.load(path, env={})
        except config.ConfigError as exc:
            return str(exc)
        return "loaded"

    said = _answers(load, path)
    assert "cannot read config file" in said and "not a regular file" in said


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    from calstream.daemon.operations import config

    path = tmp_path / "calstream.toml"
    path.write_bytes(b"\xff\xfe[calstream]\n")
    with pytest.raises(config.ConfigError, match="cannot read config file"):
        config.load(path, env={})


def test_a_config_file_larger_than_the_bound_is_not_read(tmp_path):
    from calstream.daemon.operations import config

    path = tmp_path / "calstream.toml"
    with open(path, "wb") as f:  # sparse: no disk, all of it in memory if read whole
        f.truncate(regular_files.RECORD_LIMIT + 1)
    with pytest.raises(config.ConfigError, match="bytes, more than"):
        config.load(path, env={})


@pytest.mark.parametrize("special", [_fifo, _zero], ids=["fifo", "dev_zero"])
def test_a_plan_file_that_is_no_file_is_refused_at_once(tmp_path, special):
    from calstream.steps.plans import PlanError, load_plan

    path = special(tmp_path / "pool.csv")

    def load():
        try:
            load_plan(path)
        except PlanError as exc:
            return str(exc)
        return "loaded"

    said = _answers(load, path)
    assert "cannot read plan" in said and "not a regular file" in said


def test_a_plan_file_larger_than_the_bound_is_not_read(tmp_path):
    from calstream.steps import plans

    path = tmp_path / "pool.csv"
    with open(path, "wb") as f:
        f.truncate(plans.PLAN_LIMIT + 1)
    with pytest.raises(plans.PlanError, match="bytes, more than"):
        plans.load_plan(path)


# -- the door's own reads of an inbox file ---------------------------------------
# The watcher stats a file, then reads it: a FIFO put in its place between
# the two held the read (and a turn of the door, and a thread) for ever; a
# link to /dev/zero made a digest that never ended. Each read now refuses
# at once (an OSError: the next look's stat rejects the file).

@pytest.mark.parametrize("special", [_fifo, _zero], ids=["fifo", "dev_zero"])
def test_the_doors_reads_never_wait_on_what_is_no_file(tmp_path, special):
    from calstream.steps import fitsfile
    from calstream.steps.exposure import describe_exposure

    path = special(tmp_path / f"{NAME}_uncal.fits")
    for read in (fitsfile.fits_layout, fitsfile.read_primary_header, fitsfile.file_digest,
                 describe_exposure):
        def refused(read=read):
            try:
                read(path)
            except NotARegularFile as exc:
                return str(exc)
            return "read"

        assert "not a regular file" in _answers(refused, path), read.__name__


def test_a_directory_is_refused_by_its_path_not_its_descriptor(tmp_path):
    """open(fd) of a directory raised IsADirectoryError naming the descriptor
    ("[Errno 21] Is a directory: 8"); a refusal names the path, as for a FIFO."""
    with pytest.raises(NotARegularFile, match=str(tmp_path)):
        read_regular_file(tmp_path)
