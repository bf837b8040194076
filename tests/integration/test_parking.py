"""Infrastructure faults park work and it resumes by itself; dead letters are redriven.

Real broker, real jwst, real crds. The product store full and then freed is a
small tmpfs (CI runs as root); a reference missing from the CRDS cache and then
added back is a private copy of the session kit's cache. Each test prints the
recovery time: from the moment the cause is cleared to the product event.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import anyio
import pytest

from calstream.steps.environment import environ
from calstream.steps.fitsfile import file_digest
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.topics import contract

from .support import (
    cli,
    daemon_config,
    metric,
    products,
    read_all,
    running_daemon,
    scrape,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

# Quick retries, then parked and re-checked every second: the test waits for
# states, never for times.
FAST_PARKING = dict(workers=1, max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0,
                    roles=["watcher", "detector1"])


def exposure_id(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


def dead_letters(messages) -> list[contract.Message]:
    return [m for m in messages if isinstance(m, contract.Message) and m.type == "dead_letter"]


async def until_unparked(daemon, timeout: float = 60.0) -> None:
    """Until nothing is parked or aside: what a test reads after its item is
    done. Both: a resumed item leaves the parked count when its probe goes
    through and steps back from aside only when its run and commit are over,
    after its product event is out."""
    with anyio.fail_after(timeout):
        while True:
            now = scrape(daemon.ops.address)
            if metric(now, "calstream_parked_items") == metric(now, "calstream_parked_aside") == 0:
                return
            await anyio.sleep(0.2)


async def wait_parked(daemon, cause: str, timeout: float = 180.0) -> None:
    # Generous: the item parks in or after its first run, a jwst warm-up away.
    with anyio.fail_after(timeout):
        while metric(scrape(daemon.ops.address), "calstream_parked_items", stage="detector1",
                     cause=cause) < 1:
            await anyio.sleep(0.2)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "24m"):
    """A tmpfs of ``size`` at ``where``; skipped (failed under CI) when it cannot be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    why = None
    if os.geteuid() != 0:
        why = "mounting a tmpfs needs root"
    else:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode:
            why = f"mount -t tmpfs failed: {done.stderr.strip()}"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} (CI runs as root and must run this test)")
        pytest.skip(why)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Write to ``directory`` until its file system is full but ``leave`` bytes;
    returns the filler."""
    filler = directory / "filler.bin"
    block = b"\0" * (1 << 20)
    # Unbuffered: a buffered file's close would raise ENOSPC again, flushing
    # what the last write left in its buffer.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # A write of a few bytes fails too (tmpfs rounds up to pages: take the rest).
    with contextlib.suppress(OSError), open(directory / "filler2.bin", "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 512)
    if leave:
        os.truncate(filler, filler.stat().st_size - leave)
    return filler


# 0 bytes left: the store refuses the run's scratch directory (the runner's own
# write). 256 KiB: room for the scratch directory and the log, not for the
# products: the pipeline itself fails writing them, inside the worker (asdf's
# "Not enough space on disk", which has no errno).
# (Short ids: the topic prefix is the first 40 characters of the test's name.)
@pytest.mark.parametrize("leave", [0, 256 * 1024], ids=["scratch", "pipeline"])
async def test_full_store_resumes(tmp_path, broker, kit, unique_prefix, leave):
    """A full product store parks the item; freeing space resumes it by itself."""
    with small_tmpfs(tmp_path / "store") as store:
        cfg = daemon_config(tmp_path, broker, unique_prefix, products=store, **FAST_PARKING)
        uncal = kit.uncal_files[0]
        async with running_daemon(cfg) as daemon:
            await anyio.to_thread.run_sync(fill, store, leave)
            await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
            await wait_parked(daemon, "disk_full")
            # Which disk: ENOSPC from inside the run names no path (docs/operations.md).
            assert metric(scrape(daemon.ops.address), "calstream_parked_items",
                          cause="disk_full", root=str(cfg.products)) == 1
            assert not dead_letters(await read_all(cfg, ["deadletter"]))
            assert not products(await read_all(cfg, ["products"]))
            for filler in store.glob("filler*.bin"):
                filler.unlink()
            freed = time.monotonic()
            msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1,
                                  timeout=120)
            recovery = time.monotonic() - freed
            await until_unparked(daemon)  # released as its run ends, after its event
            samples = scrape(daemon.ops.address)
        event = products(msgs)[0]
        print(f"\nfull product store ({leave} bytes left): product {recovery:.1f} s after space was freed, "
              f"{event['duration_seconds']:.1f} s of it the run "
              f"(park_recheck_seconds={cfg.park_recheck_seconds})")
        assert event["outcome"] == "success" and event["exposure_id"] == exposure_id(uncal)
        assert all(Path(o["path"]).is_file() for o in event["outputs"])
        assert metric(samples, "calstream_parked_items") == 0
        assert metric(samples, "calstream_parked_total", cause="disk_full") == 1
        assert metric(samples, "calstream_dead_letters_total") == 0
        assert not dead_letters(await read_all(cfg, ["deadletter"]))


async def test_missing_crds_reference_parks_and_resumes_when_added(tmp_path, broker, kit,
                                                                   unique_prefix):
    cache = tmp_path / "crds"
    shutil.copytree(kit.crds_env["CRDS_PATH"], cache)
    gain = next(cache.rglob("*_gain_*.fits"))
    aside = tmp_path / gain.name
    gain.rename(aside)
    cfg = daemon_config(tmp_path, broker, unique_prefix, **FAST_PARKING)
    uncal = kit.uncal_files[0]
    with environ({**kit.crds_env, "CRDS_PATH": str(cache)}):
        async with running_daemon(cfg) as daemon:
            await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
            samples = None
            with anyio.fail_after(180):  # a jwst warm-up, then the run that parks
                while not any(n == "calstream_parked_items" and v >= 1 and
                              ("cause", "disk_full") not in ls
                              for (n, ls), v in (samples or {}).items()):
                    await anyio.sleep(0.2)
                    samples = scrape(daemon.ops.address)
            assert not dead_letters(await read_all(cfg, ["deadletter"]))
            shutil.copy2(aside, gain)
            added = time.monotonic()
            msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1,
                                  timeout=120)
            recovery = time.monotonic() - added
            await until_unparked(daemon)
            after = scrape(daemon.ops.address)
    causes = {dict(ls)["cause"] for (n, ls), v in samples.items()
              if n == "calstream_parked_items" and v >= 1}
    print(f"\nCRDS reference missing ({', '.join(sorted(causes))}): product {recovery:.1f} s "
          f"after the file was added to the cache, {products(msgs)[0]['duration_seconds']:.1f} s "
          "of it the run")
    assert causes <= {"crds_unreachable", "crds_reference_missing", "crds_lookup"}
    assert products(msgs)[0]["outcome"] == "success"
    assert metric(after, "calstream_parked_items") == 0
    assert metric(after, "calstream_dead_letters_total") == 0


async def test_dead_letter_redriven_after_the_cause_is_fixed(tmp_path, broker, kit,
                                                             unique_prefix, caplog):
    # The watcher announces a file; it is then taken out of the inbox, so the
    # stage dead-letters the arrival (its input is gone). Once the file is
    # back, a redrive re-sends that arrival and it is calibrated: with no
    # watcher running, nothing else could announce it again.
    caplog.set_level("INFO", logger="calstream.admission")
    uncal = kit.uncal_files[1]
    watcher = daemon_config(tmp_path, broker, unique_prefix, roles=["watcher"])
    async with running_daemon(watcher):
        await anyio.to_thread.run_sync(lambda: deliver([uncal], watcher.inbox))
        await wait_for(watcher, ["raw"], lambda ms: len(ms) >= 1, timeout=60)
    inbox_file = watcher.inbox / uncal.name
    aside = tmp_path / uncal.name
    inbox_file.rename(aside)
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["detector1"], workers=1)
    async with running_daemon(cfg):
        # The detector1 group's first join, then the run's dead letter.
        msgs = await wait_for(cfg, ["deadletter"], lambda ms: len(dead_letters(ms)) >= 1,
                              timeout=180)
        letter = dead_letters(msgs)[0]
        assert letter["category"] == "bad_input" and letter["original"]["topic"].endswith("raw")
        listed = await anyio.to_thread.run_sync(
            cli, cfg, "deadletters", "list", "--stage", "detector1", "--category", "bad_input")
        assert listed.returncode == 0 and exposure_id(uncal) in listed.stdout, listed
        ref = listed.stdout.splitlines()[1].split()[0]
        shown = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "show", ref)
        assert shown.returncode == 0 and "redrive: possible" in shown.stdout, shown
        unknown = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "show", "3:999")
        assert unknown.returncode == 1 and "no dead letter is 3:999" in unknown.stderr, unknown
        refused = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "redrive", "--reason",
                                                 "no selection")
        assert refused.returncode == 2
        aside.rename(inbox_file)  # the cause fixed
        fixed = time.monotonic()
        redriven = await anyio.to_thread.run_sync(
            cli, cfg, "deadletters", "redrive", "--exposure", exposure_id(uncal), "--reason",
            "file restored to the inbox", "--by", "tester")
        assert redriven.returncode == 0 and "redriven 1 dead letter" in redriven.stdout, redriven
        msgs = await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1, timeout=120)
        recovery = time.monotonic() - fixed
        again = await anyio.to_thread.run_sync(
            cli, cfg, "deadletters", "redrive", "--exposure", exposure_id(uncal), "--reason",
            "twice")
        listed = await anyio.to_thread.run_sync(cli, cfg, "deadletters", "list", "--json")
    print(f"\nredrive: product {recovery:.1f} s after the redrive command started, "
          f"{products(msgs)[0]['duration_seconds']:.1f} s of it the run")
    assert products(msgs)[0]["exposure_id"] == exposure_id(uncal)
    assert "redriven 0 dead letter" in again.stdout  # already redriven: not sent twice
    assert "already redriven (1 time(s)); --again sends it again" in again.stdout, again
    rows = json.loads(listed.stdout)
    assert len(rows) == 1 and rows[0]["redrives"][0]["by"] == "tester"
    assert rows[0]["redrives"][0]["reason"] == "file restored to the inbox"
    # The stage that takes the redriven record says so, with who and why.
    assert any("redriven dead letter" in r.getMessage() and '"by": "tester"' in r.getMessage()
               for r in caplog.records)


@contextlib.contextmanager
def read_only(directory: Path):
    """``directory`` remounted read-only (a bind mount onto itself) for the block."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


async def test_a_dead_letter_whose_failure_record_is_refused_parks_and_is_not_rerun(
        tmp_path, broker, kit, unique_prefix):
    """The run fails for good (a worker over its time-out, no retry left): the
    dead letter goes out, then the store refuses the failure record that
    keeps a restart from announcing the file again (its directory read-only).
    That write parks; the run is neither run again nor dead-lettered twice."""
    uncal = kit.uncal_files[0]
    name = parse_exposure_name(uncal.name)
    cfg = daemon_config(tmp_path, broker, unique_prefix, **{
        **FAST_PARKING, "max_attempts": 1, "task_timeout": 0.2})
    failed = cfg.products / name.program / name.observation / ".failed"
    with read_only(failed):
        async with running_daemon(cfg) as daemon:
            await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
            await wait_parked(daemon, "read_only")
            samples = scrape(daemon.ops.address)
            assert metric(samples, "calstream_dead_letters_total") == 1
            assert metric(samples, "calstream_stage_runs_total", outcome="failed") == 1
            subprocess.run(["umount", "-l", str(failed)], check=True)  # writable again
            await until_unparked(daemon)
            assert daemon.store.has_failed(name.program, name.observation, name.exposure_id,
                                           "detector1", file_digest(uncal))
            samples = scrape(daemon.ops.address)
    assert metric(samples, "calstream_dead_letters_total") == 1
    assert metric(samples, "calstream_stage_runs_total", outcome="failed") == 1
    assert len(dead_letters(await read_all(cfg, ["deadletter"]))) == 1


@contextlib.contextmanager
def full_tmpfs(where: Path, size: str = "1m"):
    """A full tmpfs at ``where``; ``clear`` (the yielded callable) frees it."""
    with small_tmpfs(where, size):
        fill(where)
        yield lambda: [f.unlink() for f in where.glob("filler*.bin")]


@contextlib.contextmanager
def read_only_dir(where: Path):
    with read_only(where):
        yield lambda: subprocess.run(["umount", "-l", str(where)], check=True)


# A short name: the topic prefix is the first 40 characters of the test's id.
@pytest.mark.parametrize("fault", ["read_only", "disk_full"])
async def test_quarantine_refused_parks(
        tmp_path, broker, unique_prefix, fault):
    """A bad file cannot be moved to a read-only quarantine directory, or its
    reason note cannot be written in a full one: it stays in the inbox, parked,
    and once the directory takes it, it is moved there with its reason by
    itself, and reported once, where it lies."""
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=["watcher"], max_attempts=2,
                        retry_backoff=0.1, park_recheck_seconds=1.0)
    bad = cfg.inbox / "jw01234001001_02101_00009_nrcb1_uncal.fits"
    refusing = read_only_dir if fault == "read_only" else full_tmpfs
    with refusing(cfg.quarantine) as clear:
        async with running_daemon(cfg) as daemon:
            bad.write_text("a telemetry log\n" * 100)
            with anyio.fail_after(60):
                while metric(scrape(daemon.ops.address), "calstream_parked_items",
                             stage="watcher", cause=fault) < 1:
                    await anyio.sleep(0.2)
            assert bad.is_file()
            clear()
            await wait_for(cfg, ["deadletter"], lambda ms: len(dead_letters(ms)) >= 1, timeout=60)
            await until_unparked(daemon)
            letters = dead_letters(await read_all(cfg, ["deadletter"]))
            assert not bad.exists()
            assert "not a FITS file" in (cfg.quarantine / f"{bad.name}.reason.txt").read_text()
    assert len(letters) == 1 and letters[0]["quarantined_to"] == str(cfg.quarantine / bad.name)
