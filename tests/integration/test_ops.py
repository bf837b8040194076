"""Operations, checked by the real tools: promtool and a Prometheus server from
Debian's `prometheus` package, a running daemon on the real broker, real jwst.

promtool and prometheus are installed by `make tools` (a prerequisite of
`make test`). Without them these tests skip, except under CI=true, where a
missing tool fails: a green CI run must not hide that nothing was checked.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import anyio
import pytest
import yaml

from calstream.daemon.doers.embedded_broker import free_port
from calstream.daemon.operations.status_collection import collect
from calstream.steps.synthetic.downlink import deliver
from calstream.topics import contract

from .support import (
    WARM_AT_START,
    daemon_config,
    products,
    refused_address,
    running_daemon,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "calstream.json"
# The roles whose metrics these tests check; the others would only add start-up time.
ROLES = ["watcher", "detector1"]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path:
        return path
    why = (f"{tool} is not installed: `make tools` installs Debian's prometheus package "
           "(apt-get install prometheus)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


async def eventually(check, what: str, timeout: float = 60.0):
    """Poll ``check`` (sync or async) until it returns something truthy; return it."""
    last = None
    try:
        with anyio.fail_after(timeout):
            while True:
                if inspect.iscoroutinefunction(check):
                    last = await check()
                else:
                    last = await anyio.to_thread.run_sync(check)
                if last:
                    return last
                await anyio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"gave up waiting for {what}; last answer: {last!r}") from None


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def readyz(address: str) -> tuple[int, dict]:
    code, body = get(f"http://{address}/readyz")
    return code, json.loads(body)


def new_workers(before: set[int]) -> list[multiprocessing.Process]:
    """The calibration worker processes started since ``before`` was taken."""
    return [p for p in multiprocessing.active_children()
            if p.pid not in before and p.name.startswith("calstream-")]


# -- a real Prometheus server ---------------------------------------------------

@contextlib.asynccontextmanager
async def prometheus_server(workdir: Path, targets: list[str]):
    """Prometheus on a free loopback port with its own data directory, scraping
    ``targets`` every second and evaluating deploy/prometheus/alerts.yml."""
    binary = need("prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [{"job_name": "calstream",
                            "static_configs": [{"targets": targets}]}],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    # The port is chosen free, then bound by Prometheus itself: another process
    # may take it in between. Prometheus then exits saying so, and the start is
    # tried again on another port (a reservation cannot be handed to a child).
    for attempt in range(3):
        port = free_port()
        log = open(workdir / "prometheus.log", "w")
        proc = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / f'data{attempt}'}",
             f"--web.listen-address=127.0.0.1:{port}",
             "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            # A loaded machine: its TSDB start and the first rule load take time.
            await eventually(lambda base=base, proc=proc: _ready(base, proc, workdir),
                             "prometheus to start", 120.0)
            break
        except PortTaken:
            proc.wait()
            log.close()
            if attempt == 2:
                raise
    try:
        yield base
    finally:
        proc.terminate()
        try:
            await anyio.to_thread.run_sync(lambda: proc.wait(timeout=15))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class PortTaken(AssertionError):
    """Prometheus exited because its port was taken meanwhile."""


def _ready(base: str, proc: subprocess.Popen, workdir: Path) -> bool:
    if proc.poll() is not None:
        said = (workdir / "prometheus.log").read_text()
        raise (PortTaken if "address already in use" in said else AssertionError)(
            "prometheus exited: " + said)
    try:
        return get(f"{base}/-/ready")[0] == 200
    except OSError:
        return False


def promql(base: str, expr: str) -> list[dict]:
    code, body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    doc = json.loads(body)
    assert code == 200 and doc["status"] == "success", (expr, doc)
    return doc["data"]["result"]


def value(base: str, expr: str) -> float | None:
    result = promql(base, expr)
    return float(result[0]["value"][1]) if result else None


def alert_rule(name: str) -> dict:
    for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                return rule
    raise KeyError(name)


def dashboard_queries() -> list[str]:
    """Every PromQL query of the Grafana dashboard, with Grafana's variables
    replaced by what Grafana would send."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    return [e.replace("$__rate_interval", "1m").replace("$instance", ".*") for e in exprs]


# -- the tests ----------------------------------------------------------------

def test_promtool_accepts_the_config_the_rules_and_their_unit_tests():
    promtool = need("promtool")
    for args in (["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                 ["test", "rules", "alerts_test.yml"]):
        done = run([promtool, *args], cwd=PROMETHEUS_DIR)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}{done.stderr}"
        assert "SUCCESS" in done.stdout + done.stderr


async def test_live_metrics_pass_promtool_and_prometheus_counts_the_program(
        tmp_path, broker, kit, unique_prefix):
    promtool = need("promtool")
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=ROLES)
    # A program of two exposures: every count below is of "all of them".
    files = kit.uncal_files[:2]
    n = len(files)
    async with running_daemon(cfg) as daemon:
        address = daemon.ops.address
        async with prometheus_server(tmp_path / "prometheus", [address]) as prom:
            await anyio.to_thread.run_sync(lambda: deliver(files, cfg.inbox))
            await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= n, timeout=240)

            exposition = (await anyio.to_thread.run_sync(get, f"http://{address}/metrics"))[1]
            lint = await anyio.to_thread.run_sync(
                lambda: run([promtool, "check", "metrics"], input=exposition.decode()))
            assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), \
                lint.stdout + lint.stderr

            expected = {
                'sum(calstream_stage_runs_total{job="calstream", stage="detector1", '
                'outcome="success"})': n,
                'sum(calstream_arrivals_total{job="calstream"})': n,
                'sum(calstream_end_to_end_latency_seconds_count{stage="detector1"})': n,
                'sum(calstream_stage_duration_seconds_count{pipeline="calwebb_detector1"})': n,
                'sum(calstream_in_flight{stage="detector1"})': 0,
                f'count(calstream_build_info{{crds_context="{kit.context}"}})': 1,
                'sum(calstream_dead_letters_total) or vector(0)': 0,
                'up{job="calstream"}': 1,
            }

            def counted():
                got = {q: value(prom, q) for q in expected}
                return got if got == expected else None

            await eventually(counted, "Prometheus to have scraped the finished program")
            # The buckets make a quantile: a positive number of seconds, not NaN.
            # (Cumulative, not rate(): the program may fit in a single scrape.)
            p90 = await anyio.to_thread.run_sync(
                value, prom, 'histogram_quantile(0.9, sum by (le) ('
                             'calstream_end_to_end_latency_seconds_bucket))')
            assert p90 is not None and p90 > 0
            # Every query of the dashboard parses and runs on a real Prometheus.
            for expr in dashboard_queries():
                await anyio.to_thread.run_sync(promql, prom, expr)
            # No alert is active after a clean run.
            code, body = await anyio.to_thread.run_sync(get, f"{prom}/api/v1/alerts")
            assert json.loads(body)["data"]["alerts"] == []


async def test_a_hung_worker_makes_the_daemon_unready_and_fires_the_stall_alert(
        tmp_path, broker, kit, unique_prefix):
    need("prometheus")
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=ROLES, workers=1,
                        stall_seconds=2.0, **WARM_AT_START)  # frozen before its first item
    stall = alert_rule("CalstreamConsumerStalled")
    before = {p.pid for p in multiprocessing.active_children()}
    async with running_daemon(cfg) as daemon:
        address = daemon.ops.address
        (worker,) = new_workers(before)
        async with prometheus_server(tmp_path / "prometheus", [address]) as prom:
            await eventually(lambda: readyz(address)[0] == 200, "the daemon to be ready")
            # SIGSTOP: the worker is alive, holds its task and never answers,
            # like a worker stuck in a deadlock or on a dead filesystem.
            os.kill(worker.pid, signal.SIGSTOP)
            try:
                await anyio.to_thread.run_sync(lambda: deliver(kit.uncal_files[:1], cfg.inbox))
                code, doc = await eventually(
                    lambda: (r := readyz(address))[0] == 503 and r, "/readyz to turn 503")
                assert doc["ready"] is False
                assert any("detector1: 1 item(s) in flight and none finished" in p
                           for p in doc["problems"]), doc
                firing = await eventually(lambda: promql(prom, stall["expr"]),
                                          "the stall expression to become true in Prometheus")
                assert {r["metric"]["stage"] for r in firing} == {"detector1"}
                alerts = await eventually(
                    lambda: [a for a in json.loads(get(f"{prom}/api/v1/alerts")[1])["data"]
                             ["alerts"] if a["labels"]["alertname"] == stall["alert"]],
                    "Prometheus to evaluate the stall alert")
                assert alerts[0]["state"] in ("pending", "firing")
                assert alerts[0]["labels"]["stage"] == "detector1"
            finally:
                os.kill(worker.pid, signal.SIGCONT)
            await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 1, timeout=120)
            await eventually(lambda: readyz(address)[0] == 200, "/readyz to recover")
            await eventually(lambda: promql(prom, stall["expr"]) == [],
                             "the stall expression to clear")


async def test_status_summarises_a_running_deployment(tmp_path, broker, kit, unique_prefix):
    cfg = daemon_config(tmp_path, broker, unique_prefix, roles=ROLES, workers=1,
                        **WARM_AT_START)  # the worker is found before the first item
    first, second, third = kit.uncal_files[:3]
    cli = [sys.executable, "-m", "calstream.daemon.operations.cli", "status", "--kafka-bootstrap", broker,
           "--topic-prefix", cfg.topic_prefix, "--group-prefix", cfg.group_prefix]
    before = {p.pid for p in multiprocessing.active_children()}
    async with running_daemon(cfg) as daemon:
        address = daemon.ops.address
        (worker,) = new_workers(before)
        await anyio.to_thread.run_sync(lambda: deliver([first, second], cfg.inbox))
        (cfg.inbox / "downlink-notes.txt").write_text("not an exposure\n")

        def two_products_one_letter(ms):
            dead = [m for m in ms if isinstance(m, contract.Message) and m.type == "dead_letter"]
            return len(products(ms)) >= 2 and len(dead) >= 1

        await wait_for(cfg, ["products", "deadletter"], two_products_one_letter, timeout=180)
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            await anyio.to_thread.run_sync(lambda: deliver([third], cfg.inbox))

            async def holding_the_third():
                st = await collect(cfg, [address])
                (row,) = [r for r in st.broker.lag if r.stage == "detector1" and r.topic.endswith("raw")]
                return st if st.stages["detector1"].get("in_flight") == 1 and row.lag == 1 \
                    else None

            await eventually(holding_the_third, "the third exposure to be in flight")
            shown = await anyio.to_thread.run_sync(
                lambda: run([*cli, "--metrics-url", address]))
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        await wait_for(cfg, ["products"], lambda ms: len(products(ms)) >= 3, timeout=120)

        async def drained():
            st = await collect(cfg, [address])
            (row,) = [r for r in st.broker.lag if r.stage == "detector1" and r.topic.endswith("raw")]
            return st if row.lag == 0 and st.stages["detector1"]["in_flight"] == 0 else None

        after = await eventually(drained, "the backlog to drain")
        with refused_address(tmp_path) as closed:
            unreachable = await anyio.to_thread.run_sync(
                lambda: run([*cli, "--metrics-url", address, "--metrics-url", closed, "--json"]))

    text = shown.stdout
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"http://{address}  ready" in text
    assert "detector1: in flight 1;" in text and "runs: success 2" in text
    assert f"group {cfg.group_prefix}.detector1 on {cfg.topic_prefix}raw: lag 1" in text
    letters = text.split("Recent dead letters")[1].split("Recent products")[0]
    assert "watcher/bad_file  downlink-notes.txt: 'downlink-notes.txt' is not a JWST " \
           "exposure name" in letters
    recent = text.split("Recent products")[1].split("Held exposures")[0]
    for f in (first, second):
        eid = f.name.removesuffix("_uncal.fits")
        assert f"detector1  success  {eid}  [rate" in recent
    assert "held exposures (holds topic): 0" in text
    assert "missing exposures: not reported (no daemon given serves /planner)" in text

    assert len(after.broker.products) == 3
    assert after.stages["detector1"]["runs"] == {"success": 3}

    doc = json.loads(unreachable.stdout)
    assert unreachable.returncode == 1
    assert [e["reachable"] for e in doc["endpoints"]] == [True, False]
    assert doc["healthy"] is False
