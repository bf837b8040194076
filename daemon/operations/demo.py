"""``calstream demo``: the whole chain on the embedded default.

Embedded broker, a synthetic NIRCam program with its own reference files and
offline CRDS cache, files delivered into the inbox as a downlink would (some
in pieces), detector1, stage 2 and stage 3 in warm workers. One exposure
arrives with provisional pointing (ENGQLPTG=PLANNED): it gets its quick-look
rate product and is held before stage 2 -- and the visit's mosaic waits with
it -- until the demo redelivers it corrected. The demo waits for every
product, the image3 mosaic of the dithers included, and prints what happened.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from calstream.daemon.doers import kafka, work_dir_lock
from calstream.daemon.doers.pending_previews import pending
from calstream.daemon.operations import embedded_default
from calstream.daemon.operations.config import load
from calstream.daemon.runtime import Daemon
from calstream.steps.naming import parse_exposure_name
from calstream.steps.synthetic.downlink import deliver
from calstream.steps.synthetic.kit import build_kit
from calstream.steps.synthetic.program import ProgramSpec, simulate_program
from calstream.topics import contract

log = logging.getLogger("calstream.demo")

_MARKER = ".calstream-demo"
PLANNED_EXPOSURE = 3


def _fresh(work_dir: Path) -> None:
    """Clear the demo's directory, refusing to clear one that is not the demo's."""
    if work_dir.exists() and not work_dir.is_dir():  # iterdir's traceback
        raise SystemExit(f"calstream demo: {work_dir} is a file, not a directory; choose "
                         "another --work-dir")
    if work_dir.exists() and any(work_dir.iterdir()):
        if not (work_dir / _MARKER).exists():
            raise SystemExit(f"calstream demo: {work_dir} exists and is not a demo directory; "
                             "choose another --work-dir")
        if (holder := work_dir_lock.in_use(work_dir)) is not None:
            # Clearing it would delete a running demo's files under it.
            raise SystemExit(f"calstream demo: {work_dir} is in use by a running demo "
                             f"({holder}); wait for it or choose another --work-dir")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / _MARKER).write_text("created by calstream demo; cleared by the next demo run\n")


def exposure_id(path: Path) -> str:
    return parse_exposure_name(path.name).exposure_id


class Observed:
    """What the demo has seen on the topics, by exposure."""

    def __init__(self) -> None:
        self.detector1: dict[str, list[dict]] = {}
        self.stage2: dict[str, dict] = {}
        self.stage3: dict[str, list[dict]] = {}  # product name -> versions
        self.holds: dict[str, list[dict]] = {}
        self.dead: list[dict] = []
        self.changed = anyio.Event()

    def add(self, msg: contract.Message) -> None:
        body = msg.body
        if msg.type == "product" and body["stage"] == "detector1":
            runs = self.detector1.setdefault(body["exposure_id"], [])
            if body["event_id"] not in {r["event_id"] for r in runs}:
                runs.append(body)
        elif msg.type == "product" and body["stage"] == "stage2":
            self.stage2[body["exposure_id"]] = body
        elif msg.type == "product" and body["stage"] == "stage3" and body["outcome"] == "success":
            versions = self.stage3.setdefault(body["product_name"], [])
            if body["event_id"] not in {v["event_id"] for v in versions}:
                versions.append(body)
        elif msg.type == "hold":
            self.holds.setdefault(body["exposure_id"], []).append(body)
        elif msg.type == "dead_letter":
            self.dead.append(body)
        self.changed.set()
        self.changed = anyio.Event()

    def held(self, eid: str) -> bool:
        return bool(self.holds.get(eid)) and self.holds[eid][-1]["state"] == "held"


def run_demo(*, work_dir: Path, workers: int = 2, timeout: float = 600.0,
             metrics_address: str = "127.0.0.1:0", seed: int = 1) -> int:
    t0 = time.monotonic()
    work_dir = Path(work_dir).absolute()
    _fresh(work_dir)
    # SUB160P is read on one detector, so the visit's headers (NEXPOSUR) say
    # when its dithers are all in and the mosaic can be made.
    spec = ProgramSpec(subarray="SUB160P", planned=(PLANNED_EXPOSURE,))
    print(f"calstream demo: simulating program {spec.program} "
          f"({spec.dithers} dithers x {len(spec.detectors)} detector(s), {spec.subarray}, "
          f"exposure {PLANNED_EXPOSURE} with ENGQLPTG=PLANNED) with reference files and an "
          "offline CRDS cache ...", flush=True)
    kit = build_kit(work_dir / "synthetic", spec, seed=seed)
    # The corrected redelivery: the same exposure, pointing measured.
    corrected = next(f for f in simulate_program(work_dir / "synthetic" / "corrected",
                                                 dataclasses.replace(spec, planned=()), seed=seed)
                     if parse_exposure_name(f.name).exposure == f"{PLANNED_EXPOSURE:05d}")
    setup_seconds = time.monotonic() - t0
    if os.environ.get("CRDS_PATH") and os.environ["CRDS_PATH"] != kit.crds_env["CRDS_PATH"]:
        log.warning("the demo uses its own synthetic CRDS cache, not CRDS_PATH=%s",
                    os.environ["CRDS_PATH"])
    os.environ.update(kit.crds_env)
    # The embedded default's settings (offline: no Gaia) in a file of their own,
    # so `calstream config show --config <work_dir>/calstream.toml` shows them.
    config_file = embedded_default.write(work_dir)
    cfg = load(config_file, env={}, flags={"work_dir": work_dir, "workers": workers,
                                    "metrics_address": metrics_address,
                                    "fast_group_timing": True, "settle_seconds": 0.3,
                                    "stage3_settle": 1.0, "stage3_quiet_period": 120.0})
    seen = Observed()
    ids = [exposure_id(f) for f in kit.uncal_files]
    planned_id = exposure_id(corrected)
    outcome = {"timed_out": False}
    with work_dir_lock.holding(work_dir) as lock:
        daemon = Daemon(cfg, lock)
        daemon.start_broker()
        try:
            anyio.run(_main, daemon, kit.uncal_files, corrected, ids, planned_id, seen, timeout,
                      outcome)
        finally:
            daemon.stop_broker()
    return _summary(cfg, kit, ids, planned_id, seen, outcome, setup_seconds,
                    time.monotonic() - t0)


async def _main(daemon: Daemon, files: list[Path], corrected: Path, ids: list[str],
                planned_id: str, seen: Observed, timeout: float, outcome: dict) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        print(f"calstream demo: broker {daemon.bootstrap} (embedded tansu); metrics "
              f"http://{daemon.ops.address}/metrics; CRDS context {daemon.crds_context}",
              flush=True)
        tg.start_soon(_watch, daemon, seen)
        inbox = daemon.cfg.inbox

        def downlink() -> None:
            # Files one after another, every other one written in pieces.
            for i, f in enumerate(files):
                deliver([f], inbox, pieces=3 if i % 2 else 1, piece_delay=0.4 if i % 2 else 0.0)
                time.sleep(0.2)

        others = [e for e in ids if e != planned_id]
        with anyio.move_on_after(timeout) as scope:
            await anyio.to_thread.run_sync(downlink)
            await _until(seen, lambda: all(e in seen.detector1 for e in ids)
                         and all(e in seen.stage2 for e in others) and seen.held(planned_id))
            print(f"calstream demo: {planned_id} is held (ENGQLPTG=PLANNED); "
                  "redelivering it with corrected pointing ...", flush=True)
            await anyio.to_thread.run_sync(lambda: deliver([corrected], inbox))
            await _until(seen, lambda: planned_id in seen.stage2)
            print("calstream demo: every dither calibrated; waiting for the visit's image3 "
                  "mosaic ...", flush=True)
            await _until(seen, lambda: bool(seen.stage3))
            # Drawn once no calibration is in flight (docs/operations.md,
            # "Previews"): the console shows them, and the summary checks them.
            while await anyio.to_thread.run_sync(pending, daemon.cfg.products):
                await anyio.sleep(0.2)
        outcome["timed_out"] = scope.cancelled_caught
        tg.cancel_scope.cancel()


async def _until(seen: Observed, done: Callable[[], bool]) -> None:
    while not done():
        await seen.changed.wait()


async def _watch(daemon: Daemon, seen: Observed) -> None:
    names = [daemon.topics.name(t) for t in ("products", "holds", "deadletter")]
    async for _record, msg in kafka.read_topics(daemon.cfg, names):
        if isinstance(msg, contract.Message):
            seen.add(msg)


def _latency(p: dict) -> float:
    return (contract.parse_time(p["emitted_at"]).timestamp()
            - contract.parse_time(p["arrived_at"]).timestamp())


def _summary(cfg, kit, ids, planned_id, seen: Observed, outcome, setup_seconds,
             total_seconds) -> int:
    print()
    print(f"{'exposure':34} {'pointing':19} {'detector1':15} {'stage 2':13} {'det1 s':>6} "
          f"{'img2 s':>6} {'latency s':>9}  hold")
    problems = []
    for eid in ids:
        runs = seen.detector1.get(eid, [])
        s2 = seen.stage2.get(eid)
        if not runs:
            problems.append(f"{eid}: no detector1 product")
            print(f"{eid:34} MISSING")
            continue
        last = runs[-1]
        hold = " -> ".join(h["state"] + (f" ({h['release']['path']})" if h.get("release") else "")
                           for h in seen.holds.get(eid, [])) or "-"
        quality = "/".join("PLANNED" if r["pointing_provisional"] else "CALCULATED" for r in runs)
        d1 = ",".join(o["suffix"] for o in last["outputs"])
        s2_files = ",".join(o["suffix"] for o in s2["outputs"] if o["suffix"] != "asn") if s2 else "-"
        print(f"{eid:34} {quality:19} {d1:15} {s2_files:13} "
              f"{last['duration_seconds'] or 0:6.1f} "
              f"{(s2['duration_seconds'] or 0) if s2 else 0:6.1f} "
              f"{_latency(s2) if s2 else _latency(last):9.1f}  {hold}")
        if s2 is None:
            problems.append(f"{eid}: no stage-2 product")
    # The build-12.3 rule: nothing made from a PLANNED rate file gets past detector1.
    planned_rates = {o["digest"] for runs in seen.detector1.values() for r in runs
                     if r["pointing_provisional"] for o in r["outputs"]}
    leaked = [p["exposure_id"] for p in seen.stage2.values()
              if planned_rates & {i["digest"] for i in p["inputs"]}]
    if leaked:
        problems.append(f"stage-2 products made from PLANNED pointing: {', '.join(leaked)}")
    print()
    d1 = [r["duration_seconds"] for runs in seen.detector1.values() for r in runs]
    s2 = [p["duration_seconds"] for p in seen.stage2.values()]
    if d1 and s2:
        print(f"detector1: {len(d1)} run(s), median {statistics.median(d1):.1f} s in the pipeline; "
              f"image2: {len(s2)} run(s), median {statistics.median(s2):.1f} s; median "
              f"{statistics.median(_latency(p) for p in seen.stage2.values()):.1f} s from arrival "
              f"to the stage-2 product ({cfg.workers} warm workers per stage)")
    print()
    if not seen.stage3:
        problems.append("no stage-3 product")
    for name, versions in sorted(seen.stage3.items()):
        last = versions[-1]
        members = sorted(m["expname"] for m in last.get("association", {}).get("members", []))
        print(f"stage 3: {name} (version {last['version']}, {last['pipeline']}, "
              f"{last['duration_seconds'] or 0:.1f} s): "
              f"{', '.join(sorted(o['suffix'] for o in last['outputs']))}")
        print(f"  from {len(members)} member(s): {', '.join(members)}")
        print(f"  {_latency(last):.1f} s after its last member arrived"
              + (f"; degraded: {last['degraded']}" if last.get("degraded") else ""))
        if len(members) != len(ids):
            problems.append(f"{name}: {len(members)} members, expected {len(ids)}")
        missing = {"i2d", "cat", "segm", "crf"} - {o["suffix"] for o in last["outputs"]}
        if missing:
            problems.append(f"{name}: no {', '.join(sorted(missing))} product")
        # Every member is the final stage-2 product of its exposure: none made
        # from PLANNED pointing, none superseded since.
        final = {o["digest"] for p in seen.stage2.values() if p["exposure_id"] not in leaked
                 for o in p["outputs"]}
        stray = [i["path"] for i in last["inputs"] if i["digest"] not in final]
        if stray:
            problems.append(f"{name}: made from products that are not final: {', '.join(stray)}")
    print(f"set-up (synthetic data, references, CRDS cache): {setup_seconds:.1f} s; "
          f"whole demo {total_seconds:.1f} s")
    print(f"config:     {Path(cfg.work_dir) / embedded_default.FILE_NAME} "
          "(calstream config show --config ...)")
    print(f"inbox:      {cfg.inbox}")
    print(f"products:   {cfg.products}")
    print(f"quarantine: {cfg.quarantine}")
    print(f"CRDS cache: {kit.crds_env['CRDS_PATH']} (context {kit.context})")
    if seen.dead:
        problems += [f"dead letter ({d['stage']}): {d['reason']}" for d in seen.dead]
    events = [*(r for runs in seen.detector1.values() for r in runs), *seen.stage2.values(),
              *(v for versions in seen.stage3.values() for v in versions)]
    absent = [p["path"] for e in events for p in e.get("previews", []) if not Path(p["path"]).exists()]
    if absent:
        problems.append(f"{len(absent)} listed preview(s) not drawn, e.g. {absent[0]}")
    if outcome["timed_out"]:
        problems.append("timed out waiting for products")
    if problems:
        print("calstream demo: FAILED: " + "; ".join(problems))
        return 1
    print(f"calstream demo: OK: {len(ids)} exposures through detector1 and image2, and "
          f"image3 made their mosaic once; {planned_id} was held (and the mosaic with it) "
          f"until its corrected redelivery; {sum(len(e.get('previews', [])) for e in events)} "
          "listed previews drawn")
    return 0
