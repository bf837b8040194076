"""A daemon started into a broken world waits, says why, and heals by itself.

After a power cut brokers, disks and daemons come up in any order: a daemon
whose broker is not listening yet, or whose work directory or product store
is read-only or full, keeps its operations endpoint up (`/readyz` 503 naming
what it waits for and since when, `/healthz` 200), parks the start step
(`calstream_parked_items{stage="start"}`) and carries on with its start the
moment the cause clears: an exposure dropped afterwards becomes a product.
A configuration mistake (no CRDS settings at all) still stops at once, with
calstream's one line, and SIGTERM stops a waiting daemon cleanly.
Real broker (tansu), real jwst, real crds; the waits are on states, never times.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import anyio
import pytest

from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.daemon.doers.planner_leadership import Leadership
from calstream.daemon.doers.planner_loop import Planner
from calstream.daemon.operations.deployment import record_path
from calstream.daemon.runtime import Daemon
from calstream.steps.crds_env import CRDS_VARS
from calstream.steps.environment import environ
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver

from .support import (
    BROKER_TIMEOUT,
    broker_paused_before_first,
    daemon_config,
    metric,
    products,
    refused_address,
    scrape,
    wait_for,
)
from .test_parking import full_tmpfs, read_only_dir
from .test_planner_ha import product_event, publish

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
# Quick retries, then re-checked every second.
FAST = dict(workers=1, max_attempts=2, retry_backoff=0.1, park_recheck_seconds=1.0,
            roles=["watcher", "detector1"])


def get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def wait_until_waiting(daemon: Daemon, what: str, cause: str) -> list[str]:
    """/readyz's problems once it says the start waits for ``what`` (parked on ``cause``)."""
    with anyio.fail_after(60):
        while True:
            problems = await readyz_problems(daemon)
            waiting = [p for p in problems if f"waiting for {what}" in p and cause in p]
            if waiting and metric(scrape(daemon.ops.address), "calstream_parked_items",
                                  stage="start", cause=cause) == 1:
                return problems
            await anyio.sleep(0.2)


async def readyz_problems(daemon: Daemon) -> list[str]:
    """What /readyz says is wrong (nothing while the endpoint is not up yet)."""
    if daemon.ops is None:
        return []
    code, body = await anyio.to_thread.run_sync(get, daemon.ops.address, "/readyz")
    return json.loads(body)["problems"] if code == 503 else []


async def detector1_product_after_healing(daemon: Daemon, cfg, uncal: Path) -> None:
    """The start completes by itself; a file dropped now becomes a product."""
    with anyio.fail_after(120):
        while not daemon.start_waits.done:
            await anyio.sleep(0.2)
    assert metric(scrape(daemon.ops.address), "calstream_parked_items") == 0
    await anyio.to_thread.run_sync(lambda: deliver([uncal], cfg.inbox))
    wanted = parse_exposure_name(uncal.name).exposure_id
    await wait_for(cfg, ["products"],
                   lambda ms: any(p["exposure_id"] == wanted for p in products(ms)), timeout=180)


async def test_a_broker_that_comes_up_after_the_daemon(tmp_path, kit, unique_prefix):
    # Held (bound, not listening) until the broker starts: refused meanwhile,
    # and no other process can take the port in between.
    late = EmbeddedBroker(tmp_path / "late-broker")
    port = late.reserve_port()
    cfg = daemon_config(tmp_path, f"127.0.0.1:{port}", unique_prefix, **FAST)
    daemon = Daemon(cfg)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)  # on main: KafkaConnectionError, and the daemon is gone
            problems = await wait_until_waiting(daemon, f"the broker 127.0.0.1:{port}",
                                                "broker_unreachable")
            assert any(" since 20" in p for p in problems), problems  # since when, in UTC
            health = await anyio.to_thread.run_sync(get, daemon.ops.address, "/healthz")
            assert health == (200, "ok\n")
            late.start()
            await detector1_product_after_healing(daemon, cfg, kit.uncal_files[0])
            samples = scrape(daemon.ops.address)
            tg.cancel_scope.cancel()
    finally:
        late.stop()
    assert metric(samples, "calstream_parked_total", stage="start",
                  cause="broker_unreachable") == 1
    assert metric(samples, "calstream_broker_up") == 1


@pytest.mark.parametrize("fault", ["work_read_only", "work_full", "products_read_only",
                                   "products_full"])
async def test_a_disk_that_heals_after_the_start(tmp_path, broker, kit, unique_prefix, fault):
    """The work directory or the product store read-only or full at start.
    (On main a full product store did not stop the start, its `current` link
    fitting: the daemon said it was ready and parked its first exposure.)"""
    where = tmp_path / ("work" if fault.startswith("work") else "store")
    cause = "disk_full" if fault.endswith("full") else "read_only"
    # 24 MB once freed: room for the exposure's run
    refusing = partial(full_tmpfs, size="24m") if cause == "disk_full" else read_only_dir
    cfg = daemon_config(tmp_path, broker, unique_prefix, products=tmp_path / "store", **FAST)
    daemon = Daemon(cfg)
    with refusing(where) as clear:
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)  # on main: OSError (EROFS, ENOSPC), and it is gone
            await wait_until_waiting(daemon, "the work directory", cause)
            clear()  # writable again, or space freed
            await detector1_product_after_healing(daemon, cfg, kit.uncal_files[0])
            tg.cancel_scope.cancel()


async def test_crds_cache_that_appears_after_the_start(tmp_path, broker, kit, unique_prefix):
    """CRDS_PATH names a cache not there yet (a file system not mounted): the
    start waits (crds_unreachable), and goes on once the cache is there."""
    cache = tmp_path / "crds-mounted-later"
    cfg = daemon_config(tmp_path, broker, unique_prefix, **{**FAST, "roles": ["detector1"]})
    daemon = Daemon(cfg)
    with environ({**kit.crds_env, "CRDS_PATH": str(cache)}):
        async with anyio.create_task_group() as tg:
            tg.start_soon(daemon.run)  # on main: crds's sys.exit(-1) ends the process
            await wait_until_waiting(daemon, "CRDS", "crds_unreachable")
            # The operator finds it by its work directory alone, and sees what it waits for.
            # (On main deployment.json came only after CRDS: status found no daemon.)
            status = await anyio.to_thread.run_sync(status_of, cfg.work_dir)
            assert status.returncode == 1, status  # not ready: a check in scripts says so
            assert f"http://{daemon.ops.address}  NOT READY  starting" in status.stdout, status
            assert "problem: starting: waiting for CRDS (crds_unreachable)" in status.stdout
            assert "start: 1 item(s), crds_unreachable" in status.stdout
            await anyio.to_thread.run_sync(partial(
                shutil.copytree, kit.crds_env["CRDS_PATH"], cache, dirs_exist_ok=True))
            with anyio.fail_after(120):
                while not daemon.start_waits.done:
                    await anyio.sleep(0.2)
            assert daemon.crds_context == kit.crds_env["CRDS_CONTEXT"]
            tg.cancel_scope.cancel()


def status_of(work_dir: Path) -> subprocess.CompletedProcess:
    """`calstream status --work-dir W`: no address given, the record says it."""
    return subprocess.run([sys.executable, "-m", "calstream.daemon.operations.cli", "status",
                           "--work-dir", str(work_dir)], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("fault", ["work_read_only", "work_full"])
async def test_the_embedded_broker_waits_for_its_directory(tmp_path, unique_prefix, fault):
    """The embedded broker (tansu, its home in <work>/broker) with the work
    directory read-only or full: the daemon waits, says so, and starts the
    broker itself once the directory takes it. (Its own directory read-only
    or full is no reason to wait since session 46: the next test.)"""
    cfg = daemon_config(tmp_path, None, unique_prefix, **{**FAST, "roles": ["watcher"]})
    cause = "disk_full" if fault.endswith("full") else "read_only"
    refusing = full_tmpfs if cause == "disk_full" else read_only_dir
    daemon = Daemon(cfg)
    with refusing(cfg.work_dir) as clear:
        daemon.start_broker()  # on main: OSError (EROFS, ENOSPC) here: `calstream run` exits
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                await wait_until_waiting(daemon, "the work directory", cause)
                assert not daemon.broker.alive()
                clear()
                with anyio.fail_after(120):
                    while not daemon.start_waits.done:
                        await anyio.sleep(0.2)
                ready, problems = daemon.readiness()
                assert ready and daemon.broker.alive(), problems
                samples = scrape(daemon.ops.address)
                tg.cancel_scope.cancel()
        finally:
            daemon.stop_broker()
    assert metric(samples, "calstream_parked_items") == 0
    assert metric(samples, "calstream_parked_total", stage="start", cause=cause) == 1


@pytest.mark.parametrize("fault", ["read_only", "disk_full"])
async def test_the_embedded_broker_starts_on_its_own_directory_read_only_or_full(
        tmp_path, unique_prefix, fault):
    """tansu writes nothing in its home (<work>/broker) since its output is
    the daemon's log (session 45), but the start still wrote a probe file
    there, and waited (parked read_only or disk_full) for a disk that harmed
    nothing, until an operator freed it. Now the broker starts, and the
    daemon with it. (A real read-only mount, a real full tmpfs.)"""
    cfg = daemon_config(tmp_path, None, unique_prefix, **{**FAST, "roles": ["watcher"]})
    refusing = full_tmpfs if fault == "disk_full" else read_only_dir
    daemon = Daemon(cfg)
    (cfg.work_dir / "broker").mkdir(parents=True)
    with refusing(cfg.work_dir / "broker"):
        daemon.start_broker()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                with anyio.fail_after(120):  # a bound for a loaded machine, not a measure
                    while not daemon.start_waits.done and not daemon.start_waits.waits:
                        await anyio.sleep(0.1)
                assert daemon.start_waits.waits == [], daemon.start_waits.problems()
                ready, problems = daemon.readiness()
                assert ready and daemon.broker.alive(), problems
                samples = scrape(daemon.ops.address)
                tg.cancel_scope.cancel()
        finally:
            daemon.stop_broker()
    assert metric(samples, "calstream_parked_total", stage="start", cause=fault) == 0


@pytest.mark.parametrize("moment", ["producer", "topic reader", "lease"])
async def test_a_planner_whose_broker_does_not_answer_at_its_start(tmp_path, unique_prefix,
                                                                   monkeypatch, moment):
    """The broker stops answering (SIGSTOP: connections hang, as on a lost
    host) just as the planner, on its own loop, starts its producer or its
    first topic reader, or (planner_lease on) as the daemon's loop starts
    the lease's group member. The planner waits as every start step does
    (/readyz names the wait, /healthz stays alive) and, once the broker
    answers, catches up, leads and orders work. (On main the client's
    time-out ended the planner's loop, or the lease's task, and with it the
    daemon.)"""
    with EmbeddedBroker(tmp_path / "own-broker") as own:
        cfg = daemon_config(tmp_path, own.bootstrap, unique_prefix,
                            **{**FAST, **BROKER_TIMEOUT, "roles": ["planner"],
                               "planner_lease": moment == "lease"})
        # Hooks at the moment, on main as here: before the planner's producer
        # starts (the planner role's start), before its restore's first
        # reader, or before the lease's member starts (before the planner's loop).
        hooked, name = {"producer": (Daemon, "_run_planner"), "topic reader": (Planner, "restore"),
                        "lease": (Leadership, "run")}[moment]
        whose = {"producer": "the planner's producer", "topic reader": "the planner's topic reader",
                 "lease": "the planner lease's group"}

        stopped = broker_paused_before_first(monkeypatch, hooked, name, own, moment)
        daemon = Daemon(cfg)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(daemon.run)
                # The first try ends with the client's request time-out (broker_timeout_seconds).
                with anyio.fail_after(300):  # a bound for a broken daemon, not a measure
                    while not any(f"waiting for the broker {own.bootstrap} ({whose[moment]}"
                                  in p and "broker_unreachable" in p
                                  for p in await readyz_problems(daemon)):
                        await anyio.sleep(0.2)
                assert stopped == [moment]
                health = await anyio.to_thread.run_sync(get, daemon.ops.address, "/healthz")
                assert health == (200, "ok\n")
                assert not daemon.start_waits.done
                os.kill(own.process.pid, signal.SIGCONT)
                with anyio.fail_after(180):
                    while not (daemon.start_waits.done and daemon.readiness()[0]):
                        await anyio.sleep(0.2)
                await publish(cfg, [product_event(cfg.products, cfg.inbox, 4545, 1, 2)])
                orders = await wait_for(cfg, ["work.stage2"], lambda ms: any(
                    getattr(m, "type", "") == "work_order" for m in ms), timeout=180)
                with anyio.fail_after(60):
                    while metric(scrape(daemon.ops.address), "calstream_parked_items") != 0:
                        await anyio.sleep(0.2)
                tg.cancel_scope.cancel()
        finally:
            os.kill(own.process.pid, signal.SIGCONT)  # stopped, it would not stop
    assert [o["exposure_id"] for o in orders if o.type == "work_order"]


def calstream(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "calstream.daemon.operations.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)


def until_it_waits_for_its_broker(daemon: subprocess.Popen, work: Path) -> None:
    """Until a `calstream run` process's /readyz (found through its deployment
    record) says it waits for its broker; it must not exit meanwhile."""
    for _ in range(600):  # a bound for a broken daemon, not a measure
        assert daemon.poll() is None, daemon.communicate()
        doc = json.loads(record_path(work).read_text()) if record_path(work).exists() else {}
        if doc.get("metrics_address"):
            code, body = get(doc["metrics_address"], "/readyz")
            if code == 503 and any("waiting for the broker" in p
                                   for p in json.loads(body)["problems"]):
                return
        time.sleep(0.2)
    pytest.fail("the daemon never said it waits for its broker")


def test_sigterm_while_waiting_for_the_broker_stops_cleanly(tmp_path):
    with refused_address(tmp_path) as nobody:
        sigterm_while_waiting_for(nobody, tmp_path)


def sigterm_while_waiting_for(nobody: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    daemon = calstream("run", "--work-dir", str(work), "--kafka-bootstrap", nobody,
                       "--metrics-address", "127.0.0.1:0", "--role", "watcher",
                       env=dict(os.environ))
    try:
        # On main the daemon exits 1 at once: it never waits, and this fails.
        until_it_waits_for_its_broker(daemon, work)
        # An operator's command against the same broker answers at once, in one line.
        holds = subprocess.run([sys.executable, "-m", "calstream.daemon.operations.cli",
                                "holds", "list", "--kafka-bootstrap", nobody, "--work-dir",
                                str(tmp_path / "operator")], cwd=ROOT,
                               env=dict(os.environ), capture_output=True, text=True,
                               timeout=120)
        assert holds.returncode == 1 and "the Kafka broker does not answer" in holds.stderr
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert "Traceback" not in err, err
    assert not record_path(work).exists()  # removed on a clean exit


def test_run_without_crds_settings_is_a_configuration_error(tmp_path):
    """No CRDS variable at all (`source crds.env` forgotten): calstream's one
    line and exit status 2, not crds's FATAL and 255 (the embedded broker)."""
    env = {k: v for k, v in os.environ.items() if k not in CRDS_VARS}
    env["CRDS_DEFAULT_CACHE"] = str(tmp_path / "no-default-cache")  # crds's own fallback
    done = calstream("run", "--work-dir", str(tmp_path / "work"), "--metrics-address",
                     "127.0.0.1:0", env=env)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 2, (done.returncode, err)
    ours = [line for line in err.splitlines() if line.startswith("calstream: configuration")]
    assert len(ours) == 1 and "no CRDS context could be determined" in ours[0], err
    assert "FATAL" not in err and "Traceback" not in err, err

