"""What the benches measure with: CPU of a process tree, the disk settled
between setups, a batch staged beside the inbox, products compared byte for
byte, medians with their spread, a round in its own interpreter (this
checkout's code or another's) and a round's embedded broker."""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every live descendant."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(p for p, parent in parents.items() if parent == pid)
    return total


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def stage(files: list[Path], inbox: Path) -> list[tuple[Path, Path]]:
    """Each file copied and synced under a hidden name in ``inbox`` (which the
    watcher ignores); the (hidden, final) pairs, to be moved in at once.

    The bench's own, not steps/synthetic/downlink's: with ``--before`` it
    runs against another checkout's package, which may not have a helper
    that stops short of the rename."""
    inbox.mkdir(parents=True, exist_ok=True)
    pairs = []
    for f in files:
        final = inbox / f.name
        hidden = final.with_name(f".{f.name}.part")
        shutil.copyfile(f, hidden)
        fd = os.open(hidden, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        pairs.append((hidden, final))
    os.sync()  # and nothing of the copies left for the kernel to write back meanwhile
    return pairs


def identical(daemon_outputs: dict[str, list[str]], direct_dir: Path) -> tuple[int, list[str]]:
    """Products compared (every data extension, byte for byte) and the differing ones."""
    import numpy as np
    from astropy.io import fits

    compared, differing = 0, []
    for paths in daemon_outputs.values():
        for p in map(Path, paths):
            direct = direct_dir / p.name
            if not p.name.endswith(".fits") or not direct.exists():
                continue
            compared += 1
            with fits.open(p) as a, fits.open(direct) as b:
                for ha, hb in zip(a, b, strict=False):
                    if ha.name == "ASDF" or not hasattr(ha, "data") or ha.data is None:
                        continue
                    da, db = np.asarray(ha.data), np.asarray(hb.data)
                    if da.shape != db.shape or da.tobytes() != db.tobytes():
                        differing.append(f"{p.name}[{ha.name}]")
    return compared, differing


def settle() -> None:
    """Before each setup (untimed): the previous one's writes go to disk now.

    strun and the limit leave their outputs in the page cache (the daemon
    syncs its own), and the kernel writes them back some 30 s later, in the
    middle of whichever setup runs then: at full frame 0.8 GB of it.
    """
    os.sync()
    time.sleep(1.0)


def spread(values: list[float], digits: int = 2) -> dict:
    return {"median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


def round_in_process(script: Path | str, args: list[str], code: Path | None = None, *,
                     timeout: float | None = None) -> dict:
    """One round of a bench in a fresh interpreter: ``script`` run with
    ``args``, the ``calstream`` package found on ``code`` (another
    checkout's, for ``--before``) or this one's; the round prints its result
    as JSON on its last line. Its stderr's end is shown if it fails."""
    env = {**os.environ, **({"PYTHONPATH": str(code)} if code else {})}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        done.check_returncode()
    return json.loads(done.stdout.strip().splitlines()[-1])


def on_embedded_broker(prefix: str, main: Callable[[str, Path], Awaitable[dict]]) -> dict:
    """``main(bootstrap, tmp)`` run on a fresh embedded broker whose home is
    in a new temporary directory ``tmp``, removed after: a round's broker
    log and stores can be hundreds of MB. The broker is the code under
    test's (imported here, in the round's interpreter)."""
    import anyio

    from calstream.daemon.doers.embedded_broker import EmbeddedBroker

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with EmbeddedBroker(tmp / "broker") as broker:
            return anyio.run(main, broker.bootstrap, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
