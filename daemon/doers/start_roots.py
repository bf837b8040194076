"""The daemon's roots made at start, and written once: the work directory
(its lock first), the product store, the inbox and the quarantine. Plain
calls: the start makes them timed (start_waits.StartWaits.roots_made,
inbox_made), since a silent mount blocks each of them for ever."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from calstream.daemon.doers.work_dir_lock import WorkDirLock
from calstream.daemon.operations.config import Config, ConfigError


def prepare_roots(cfg: Config, lock: WorkDirLock | None = None) -> None:
    """The daemon's directories made, and those it writes written once: a
    read-only or full file system is found here, where the start waits for
    it, rather than by the first exposure. A permission denied is the
    configuration's (a person must change the owner or the path). The
    inbox and the quarantine apart; the start times both (StartWaits).

    ``lock``, the work directory's, is taken first if the start could not
    (the directory not makeable then): before anything is written there,
    and WorkDirInUse (exit 2) if another daemon took it meanwhile."""
    work_dir_made(cfg, lock)
    store_made(cfg)


def work_dir_made(cfg: Config, lock: WorkDirLock | None = None) -> None:
    """prepare_roots' work directory (deployment.json, the watcher's and
    the planner's ledgers): its lock taken, made, written once."""
    with _refused_as_configuration():
        if lock is not None:
            lock.take()
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        probe_writable(cfg.work_dir)


def store_made(cfg: Config) -> None:
    """prepare_roots' product store: made, and written once where a stage
    writes it (a watcher or planner only reads it)."""
    with _refused_as_configuration():
        cfg.products.mkdir(parents=True, exist_ok=True)
        if set(cfg.roles) - {"watcher", "planner"}:
            probe_writable(cfg.products)  # the stages' products and records


def make_inbox(cfg: Config) -> None:
    """The inbox and the quarantine made (as they are, if they exist)."""
    with _refused_as_configuration():
        for d in (cfg.inbox, cfg.quarantine):
            d.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def _refused_as_configuration() -> Iterator[None]:
    """What no wait clears, as ConfigError (exit 2): a permission denied, a
    file where a root goes."""
    try:
        yield
    except PermissionError as exc:
        raise ConfigError(f"{exc.filename}: {exc.strerror}: the daemon cannot write there; "
                          "give it a directory it owns (work_dir, products, inbox)") from None
    except (FileExistsError, NotADirectoryError) as exc:
        # A file where a root goes (--work-dir naming the config file, say):
        # the operator's, never moved aside; no wait clears it. It ended the
        # start in an exception group's traceback.
        raise ConfigError(f"{exc.filename}: a file is there, or above it, not a directory: "
                          "work_dir, products, inbox, quarantine are directories") from None


def probe_writable(root: Path) -> None:
    """A file written to ``root`` and removed: raises on a read-only or full
    file system (EROFS, ENOSPC), which creating a directory may not."""
    probe = Path(root) / f".calstream-start-probe-{os.getpid()}"
    try:
        with open(probe, "wb", buffering=0) as f:  # unbuffered: ENOSPC shows here
            f.write(b"calstream")
    finally:
        probe.unlink(missing_ok=True)
