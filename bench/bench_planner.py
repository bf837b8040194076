"""The planner at mission scale: events per second, and restart-to-ready time.

Throughput. A synthetic program of S exposures (NIRCam imaging, visits of
20 exposures, observations of up to 50 visits: one level-3 candidate per
observation) arrives as product events: a visit's detector1 events, then
its stage-2 events. Each event goes the planner's whole record path
(``RecordPath``: decode and validate the bytes, the trust checks, the event
id check, the decision), as ``doers/planner_loop.py`` does: a fetch's records
(``--batch``, by default the loop's ``TAKEN_AHEAD``) take their way in
together, then each is decided. The planner's own
orders are not validated on this path (tests/unit/test_planner_outputs.py
validates them; the publisher's encoding checks each message's schema). "fresh" is the
first pass over the stream; "redelivered" the same records again (a broker
redelivery, a restart's re-read). Sizes run interleaved (10, 100, 1000,
10000, 10, ...) and repeated; each figure is the median of the repeats with
their spread, wall time and CPU time side by side. Every run of size S feeds
at least ``--events`` events (several programs for small S), so a small
program is not timed over a handful of events.

Restart. H events of history (10k, 100k, 1M; fed to the decider directly,
not timed, and kept in ``--work-dir`` for the next run: see
``built_history``) then a restart: the full rebuild (every record decided
again) against the snapshot path. Saving is timed in its two parts, the
capture on the planner's loop and the encoding and writing in a thread,
three times: the first snapshot (every block encoded), the next one of the
same planner ``--tail`` events later and one after the restart below (both
reusing the blocks that did not change: deciders/snapshot_reuse.py);
the restart is reading ``deciders/planner_snapshot.py``'s snapshot from its
file, restoring it and deciding the tail (``--tail`` events): ready. Then
the history's first ``--tail`` events again, as a redelivery of old
history after ready: the records they read are built (their blocks
decoded) only now, and this says what that costs. Wall
and CPU seconds side by side (on a shared machine wall time alone means
little). A rebuild longer than ``--rebuild-budget`` seconds is stopped and
extrapolated (marked ~).

    .venv/bin/python bench/bench_planner.py                    # everything
    .venv/bin/python bench/bench_planner.py --sizes 10,100 --repeats 3 --no-restart
    .venv/bin/python bench/bench_planner.py --histories 10000,100000,1000000 --no-throughput
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Iterator

from calstream.daemon.deciders.event_checks import EventIds
from calstream.daemon.deciders.planner_state import PlannerState
from calstream.daemon.deciders.product_intake import ProductIntake
from calstream.daemon.doers.planner_restore import tune_collector
from calstream.steps.synthetic.headers import exposure_id, synthetic_header
from calstream.topics import contract

try:
    from calstream.daemon.doers.planner_loop import TAKEN_AHEAD
except ImportError:  # the code before session 29 (planner_on_broker.py --before)
    TAKEN_AHEAD = 1

T0 = 1_800_000_000.0
VISIT = 20  # exposures per visit (NEXPOSUR)
OBSERVATION = 50  # visits per observation
PRODUCTS = "/products"
ROOTS = ["/inbox"]


def _digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _product(stage: str, header: dict, at: float) -> bytes:
    # The bytes the daemon's publisher writes (contract.encode: compact, sorted
    # keys), without its schema check, which would make a 1M history slow to build.
    return json.dumps(_product_body(stage, header, at), separators=(",", ":"),
                      sort_keys=True).encode()


def _product_body(stage: str, header: dict, at: float) -> dict:
    eid = exposure_id(header)
    suffixes = ("rate", "rateints") if stage == "detector1" else ("cal", "i2d")
    where = f"{PRODUCTS}/{header['PROGRAM']}/{header['OBSERVTN']}"
    outputs = [{"path": f"{where}/{eid}_{s}.fits", "digest": _digest(f"{eid}{s}{stage}"),
                "size": 10, "suffix": s} for s in suffixes]
    raw = _digest(f"{eid}-{stage}")
    wid = hashlib.sha256(raw.encode()).hexdigest()
    body = {"schema": "calstream.product", "schema_version": contract.SCHEMA_VERSION,
            "event_id": contract.event_id("product", wid, "success"),
            "emitted_at": contract.iso(at), "work_id": wid, "stage": stage,
            "pipeline": "calwebb_detector1" if stage == "detector1" else "calwebb_image2",
            "outcome": "success", "program": header["PROGRAM"],
            "observation": header["OBSERVTN"], "exposure_id": eid, "product_name": eid,
            "header": header,
            "inputs": [{"path": f"/inbox/{eid}_uncal.fits" if stage == "detector1"
                        else f"{where}/{eid}_rate.fits", "digest": raw}],
            "outputs": outputs, "jwst_version": "3.0.0", "crds_context": "jwst_0001.pmap",
            "pointing_quality": header["ENGQLPTG"], "pointing_provisional": False,
            "arrived_at": contract.iso(at - 5)}
    return body


def program_records(program: int, size: int, start: float = T0) -> Iterator[bytes]:
    """The product events of one program of ``size`` exposures, in arrival order."""
    for stage, header, at in _program(program, size, start):
        yield _product(stage, header, at)


def _program(program: int, size: int, start: float) -> Iterator[tuple[str, dict, float]]:
    """(stage, header, time) of each product event of a program, in arrival
    order; an exposure's two events share one header."""
    at = start
    for first in range(0, size, VISIT):
        in_visit = min(VISIT, size - first)
        visit = first // VISIT
        headers = [synthetic_header(
            "NIRCAM", "NRC_IMAGE", PROGRAM=f"{program:05d}",
            OBSERVTN=f"{visit // OBSERVATION + 1:03d}", VISIT=f"{visit % OBSERVATION + 1:03d}",
            EXPOSURE=f"{n:05d}", NEXPOSUR=in_visit, SUBARRAY="SUB160P")
            for n in range(1, in_visit + 1)]
        for stage in ("detector1", "stage2"):
            for h in headers:
                at += 0.01
                yield stage, h, at


class RecordPath:
    """What the planner loop does with one products record, without Kafka."""

    @staticmethod
    def settings() -> dict:
        return {"companion_wait": 3600.0, "level3_settle": 600.0, "level3_quiet_period": 3600.0}

    def __init__(self, **kw):
        tune_collector()  # as the planner's process does (doers/planner_restore.py)
        self.state = PlannerState(**self.settings(), **kw)
        self.event_ids = EventIds()
        self.intake = ProductIntake(products_root=PRODUCTS, input_roots=ROOTS)

    def __call__(self, raw: bytes) -> int:
        return self.batch([raw])

    def batch(self, raws: list[bytes]) -> int:
        """Records as the loop has them from a fetch: their way in together
        (``ProductIntake.take_each``), then each one's decision in order."""
        made = 0
        for taken in self.intake.take_each(raws, self.event_ids):
            if isinstance(taken, Exception) or taken[1]:
                raise AssertionError(f"the bench's own event is refused: {taken}")
            event = taken[0]
            now = contract.parse_time(event["emitted_at"]).timestamp()
            made += len(self.state.observe(event, now))
        return made


def _timed(path: RecordPath, records: list[bytes], budget: float,
           batch: int = TAKEN_AHEAD) -> tuple[float, float, int]:
    """(wall s, cpu s, events) over ``records`` fed ``batch`` at a time, stopped
    after ``budget`` seconds."""
    gc.collect()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    done = 0
    for first in range(0, len(records), batch):
        chunk = records[first:first + batch]
        path.batch(chunk)
        done += len(chunk)
        if time.perf_counter() - wall0 > budget:
            break
    return time.perf_counter() - wall0, time.process_time() - cpu0, done


def reference_ns(iterations: int = 1_000_000) -> float:
    """CPU nanoseconds an iteration of a fixed piece of plain Python (a dict
    look-up and store, a call, an f-string) takes: how fast this machine runs
    the interpreter today. The same code's events a CPU-second moved 3.4-fold
    between sessions on machines of the same kind (session 38: 4,070 against
    13,900 in session 30, for 2 % more instructions an event by
    count_planner.py); this figure, measured in the same run, says which part
    of a change of rate is the machine's."""
    table: dict[str, int] = {}

    def step(i: int) -> str:
        return f"k{i & 1023}"

    started = time.process_time()
    for i in range(iterations):
        key = step(i)
        table[key] = table.get(key, 0) + 1
    return (time.process_time() - started) / iterations * 1e9


def throughput(sizes: list[int], repeats: int, events: int, budget: float,
               batch: int = TAKEN_AHEAD) -> dict:
    streams = {}
    for size in sizes:
        programs = max(1, -(-events // (2 * size)))
        streams[size] = [r for p in range(programs) for r in program_records(p + 1, size)]
    runs: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    machine: list[float] = []
    for _ in range(repeats):
        machine.append(reference_ns())
        for size in sizes:  # interleaved: a drift of the machine hits every size alike
            path = RecordPath()
            runs.setdefault(("fresh", size), []).append(
                _timed(path, streams[size], budget, batch))
            runs.setdefault(("redelivered", size), []).append(
                _timed(path, streams[size], budget, batch))
    table = {}
    for (kind, size), rs in runs.items():
        rates = [n / w for w, _, n in rs]
        cpu_rates = [n / c for _, c, n in rs if c > 0]
        table[f"{kind} {size}"] = {
            "events_per_s": round(statistics.median(rates)),
            "spread": [round(min(rates)), round(max(rates))],
            "cpu_events_per_s": round(statistics.median(cpu_rates)) if cpu_rates else None,
            "events": rs[0][2], "of": len(streams[size])}
    table["machine_reference_ns"] = {"median": round(statistics.median(machine)),
                                     "spread": [round(min(machine)), round(max(machine))]}
    for kind in ("fresh", "redelivered"):
        small, large = table[f"{kind} {sizes[0]}"], table[f"{kind} {sizes[-1]}"]
        table[f"{kind} ratio {sizes[-1]}/{sizes[0]}"] = round(
            large["events_per_s"] / small["events_per_s"], 2)
    return table


def history(total: int) -> Iterator[bytes]:
    """``total`` product events: programs of 1,000 exposures, one after another."""
    for stage, header, at in _history(total):
        yield _product(stage, header, at)


def _history(total: int) -> Iterator[tuple[str, dict, float]]:
    program = 1
    while True:
        for event in _program(program, 1000, T0 + program * 1000):
            yield event
            total -= 1
            if total <= 0:
                return
        program += 1


def _decisions_fingerprint() -> str:
    """The planner's decision code: a cached history is built again when it changes."""
    from pathlib import Path

    deciders = Path(__file__).resolve().parent.parent / "daemon" / "deciders"
    digest = hashlib.sha256(Path(__file__).read_bytes())  # the records it writes too
    for source in sorted(deciders.glob("*.py")):
        if source.name not in ("planner_snapshot.py", "snapshot_columns.py", "lazy_records.py",
                               "restored_records.py", "snapshot_blocks.py",
                               "snapshot_records.py", "snapshot_reuse.py", "snapshot_numbers.py"):
            digest.update(source.name.encode() + source.read_bytes())
    return digest.hexdigest()[:16]


def _history_cache(total: int, work: str):
    from pathlib import Path

    return Path(work) / f"history-{total}", f"bench-history-{_decisions_fingerprint()}"


def cache_history(path: RecordPath, total: int, work: str) -> None:
    """Keep the state ``total`` events built, as a snapshot, for the next run."""
    from calstream.daemon.deciders import planner_snapshot
    from calstream.daemon.doers import planner_snapshots

    where, version = _history_cache(total, work)
    planner_snapshots.write(where, planner_snapshot.take(
        {"live": path.state}, holds=path.state.holds, plans={}, event_ids=path.event_ids),
        offsets={}, calstream_version=version)


def built_history(total: int, work: str) -> RecordPath:
    """The planner after ``total`` events of history, each decided as it came.
    Deciding a million events takes long, so the state is kept between runs
    (``<work-dir>/history-N``, rebuilt when the decision code changes); the
    restart measured below reads another snapshot, written from this state."""
    from calstream.daemon.deciders import planner_snapshot
    from calstream.daemon.deciders.snapshot_columns import collector_paused
    from calstream.daemon.doers import planner_snapshots

    where, version = _history_cache(total, work)
    cached = planner_snapshots.read(where, max_age=None, calstream_version=version)
    path = RecordPath()
    if cached is not None:
        states, _, _, path.event_ids = planner_snapshot.restore(cached.body,
                                                                **RecordPath.settings())
        path.state = states["live"]
        return path
    # The bench's own events, made as dicts (no JSON text: a million events
    # are built in minutes, and an exposure's two events share one header)
    # and decided without the record checks.
    with collector_paused():  # a million events' objects, none of them garbage
        for stage, header, at in _history(total):
            body = _product_body(stage, header, at)
            path.event_ids.consistent(body["event_id"], body)
            path.state.observe(contract.Message("product", body), at)
        gc.freeze()
    cache_history(path, total, work)
    gc.unfreeze()
    return path


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(started: tuple[float, float]) -> str:
    wall, cpu = _clocks()
    return f"{wall - started[0]:.2f} s wall, {cpu - started[1]:.2f} s cpu"


def _snapshot(row: dict, label: str, state: PlannerState, event_ids: EventIds, reuse,
              where: str) -> tuple:
    """A snapshot as doers/planner_restore.take_snapshot takes it, timed in
    its two parts; (the cache for the next one, its size)."""
    from calstream.daemon.deciders import planner_snapshot
    from calstream.daemon.deciders.snapshot_columns import collector_paused
    from calstream.daemon.deciders.snapshot_reuse import BlockWriter
    from calstream.daemon.doers import planner_snapshots

    started = _clocks()
    with collector_paused():
        captured = planner_snapshot.capture({"live": state}, holds=state.holds, plans={},
                                            event_ids=event_ids)
    row[f"{label}: capture (on the loop)"] = _since(started)
    started = _clocks()
    writer, stored = BlockWriter(reuse), []
    with collector_paused():  # as take_snapshot's thread does
        size = planner_snapshots.write(where, planner_snapshot.encode(captured, writer),
                                       offsets={}, calstream_version="bench", stored=stored)
    row[f"{label}: encode + write (thread)"] = _since(started)
    row[f"{label}: blocks reused"] = f"{writer.reused} of {len(writer.blocks)}"
    return writer.written(stored), size


def restart(histories: list[int], tail: int, budget: float, work: str) -> dict:
    from calstream.daemon.deciders import planner_snapshot
    from calstream.daemon.deciders.snapshot_columns import collector_paused
    from calstream.daemon.deciders.snapshot_reuse import BlockCache
    from calstream.daemon.doers import planner_snapshots

    out = {}
    for total in histories:
        tail_records = list(program_records(10**5 - 1, tail // 2, T0 + 10**9))
        old_records = list(history(min(tail, total)))
        row: dict = {}
        # The full rebuild: every record again (as at a start without a snapshot).
        rebuild = RecordPath()
        started = _clocks()
        done = 0
        for raw in history(total):
            rebuild(raw)
            done += 1
            if done % 1024 == 0 and time.perf_counter() - started[0] > budget:
                break
        (wall, cpu), scale = _clocks(), total / done
        row["full_rebuild"] = f"{(wall - started[0]) * scale:.0f} s wall, " \
            f"{(cpu - started[1]) * scale:.0f} s cpu" + (
                f" (~: extrapolated from {done} events)" if done < total else "")
        del rebuild
        gc.collect()
        path = built_history(total, work)
        gc.collect()
        # Saving: what the planner's loop does (capture), then its thread. The
        # first snapshot encodes every block; a later one, after new events,
        # reuses the blocks they did not change (deciders/snapshot_reuse.py).
        reuse, size = _snapshot(row, "first snapshot (every block encoded)", path.state,
                                path.event_ids, None, work)
        row["snapshot_bytes"] = size
        for raw in tail_records:
            path(raw)
        _snapshot(row, f"next snapshot, {len(tail_records)} events later", path.state,
                  path.event_ids, reuse, f"{work}/running")
        del path, reuse
        gc.collect()
        # The restart: read and restore the snapshot, decide the tail, ready.
        started = _clocks()
        reuse = BlockCache()
        with collector_paused():  # as doers/planner_restore.load_snapshot does
            loaded = planner_snapshots.read(work, max_age=None, calstream_version="bench")
            states, holds, _, event_ids = planner_snapshot.restore(
                loaded.body, **RecordPath.settings(), reuse=reuse)
            del loaded
            gc.freeze()
        fresh = RecordPath()
        fresh.state, fresh.event_ids = states["live"], event_ids
        row["snapshot_load"] = _since(started)
        for raw in tail_records:
            fresh(raw)
        row["restart_to_ready"] = _since(started)
        row["tail_events"] = len(tail_records)
        _snapshot(row, "snapshot after the restart and tail", fresh.state, fresh.event_ids,
                  reuse, f"{work}/restarted")
        # After ready: the first program's events again (a redelivery of old
        # history), whose records are read, and their blocks decoded, now.
        started = _clocks()
        for raw in old_records:
            fresh(raw)
        row[f"then {len(old_records)} old events redelivered"] = _since(started)
        row["exposures_restored"] = len(fresh.state.exposures)
        del fresh, states
        gc.unfreeze()
        gc.collect()
        out[f"{total} events"] = row
        print(json.dumps({f"{total} events": row}), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000,10000", help="exposures per program")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--events", type=int, default=20_000,
                    help="events fed per run at least (several programs when small)")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds per run at most (the rest is not fed)")
    ap.add_argument("--histories", default="10000,100000,1000000")
    ap.add_argument("--tail", type=int, default=1000, help="events after the snapshot")
    ap.add_argument("--rebuild-budget", type=float, default=120.0)
    ap.add_argument("--work-dir", default="/tmp/bench-planner")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--no-restart", action="store_true")
    ap.add_argument("--batch", type=int, default=TAKEN_AHEAD,
                    help="records taken in together, as the planner loop takes a fetch's "
                         "(1: one record after another, as until session 29)")
    args = ap.parse_args()
    figures: dict = {}
    if not args.no_throughput:
        figures["throughput"] = throughput([int(s) for s in args.sizes.split(",")],
                                           args.repeats, args.events, args.budget,
                                           args.batch)
        print(json.dumps(figures["throughput"], indent=1), flush=True)
    if not args.no_restart:
        figures["restart"] = restart([int(h) for h in args.histories.split(",")], args.tail,
                                     args.rebuild_budget, args.work_dir)
        print(json.dumps(figures["restart"], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
