"""Claims on work items in the shared product store: no run starts twice
between daemons (the judgement is deciders/work_claims.py).

Within one daemon, runs are tracked by work id (work_item_runner.py). Between
two daemons of one consumer group the only thing they surely share is the
product store they both write, so a run holds a claim file there:
``<products>/.claims/<work id>.v<version>``, created with O_EXCL (one creator
wins), naming its owner (host, pid, a per-process token) and the item, and
touched (its mtime is the heartbeat) every ``claim_heartbeat_seconds`` while
the run lasts. It is removed after the run, once the provenance record (the
commit marker) is down or the run has given up. A daemon that finds a live
claim waits, polling, before it asks for a worker; when the claim goes away
it claims the work itself and finds it "already done" in the store; when the
claim goes stale (no heartbeat for ``claim_stale_seconds``) it takes it over.
"No heartbeat" is counted by the observer's monotonic clock from when it saw
the mtime last change, never from the mtime to its wall clock
(doers/heartbeat_silence.py says why).

A takeover renames the stale file aside (one renamer wins) and checks that the
file it moved is the one it judged stale; if the claim was taken or touched
meanwhile it is linked back. docs/operations.md says how to clear one by hand.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio

from calstream.daemon.deciders.work_claims import FREE, LIVE, MINE, Owner, claim_name, judge
from calstream.daemon.doers.child_processes import pid_alive
from calstream.daemon.doers.durable_files import fsync_dir
from calstream.daemon.doers.heartbeat_silence import HeartbeatSilence
from calstream.daemon.doers.product_store import OutsideRoot
from calstream.steps.failures import infrastructure_cause
from calstream.steps.regular_files import (
    NotARegularFile,
    directory_in_place,
    read_regular_text,
    set_aside_unless_regular,
)

log = logging.getLogger("calstream.claims")

CLAIMS = ".claims"
# The claims this process holds now, as (path, token): a claim naming this
# process but not held by it was left by a run that was cut short (or by an
# earlier daemon in this process, as in the tests), and nobody runs it.
_HELD: set[tuple[str, str]] = set()
# What a heartbeat found (WorkClaims.beat).
OURS, LOST, UNSURE = "ours", "lost", "unsure"
# A beat the store could not answer is tried again after this share of the
# heartbeat: several tries before the claim could look stale (its bound is at
# least two heartbeats: config.py).
UNSURE_RETRY_SHARE = 0.25
# A claim whose read or removal fails at a run's end is tried this many
# times, this far apart, before it is left to go stale.
RELEASE_TRIES, RELEASE_RETRY_SECONDS = 3, 0.2


def mark_held(path: Path, token: str, held: bool = True) -> None:
    """Say that this process holds (or no longer holds) the file ``path``
    naming it with ``token``: another file of this process's pid is judged
    left behind (pending_previews.py's owner files are judged as claims)."""
    (_HELD.add if held else _HELD.discard)((str(path), token))


def new_owner() -> Owner:
    """This process, with a token of its own: a restarted daemon (same host,
    maybe the same pid in a container) or a second daemon in one process is
    another owner."""
    return Owner(socket.gethostname(), os.getpid(), secrets.token_hex(8))


class WorkClaims:
    """The claims of one product store (its top: the live tree; work ids
    already differ by namespace)."""

    def __init__(self, store_top: Path, *, heartbeat_seconds: float, stale_seconds: float,
                 metrics: Any = None, me: Owner | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.directory = Path(store_top) / CLAIMS
        self.top = Path(store_top)
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.metrics = metrics
        self.me = me or new_owner()
        self.silence = HeartbeatSilence(monotonic)

    def path(self, work_id: str, version: int) -> Path:
        """The claim file of a work item: its name checked, its place inside the store."""
        path = self.directory / claim_name(work_id, version)
        if not path.resolve().is_relative_to(self.top.resolve()):
            raise OutsideRoot(f"{path} is outside the product store {self.top}")
        return path

    # --- file work (in a thread) ---------------------------------------------

    def _create(self, path: Path, about: dict[str, Any]) -> bool:
        try:
            return self._create_or_raise(path, about)
        except FileExistsError:
            # A directory, FIFO or link at the claim's name is no daemon's claim
            # (they write regular files), and would be "live" for ever: moved
            # aside, and the claim made.
            if set_aside_unless_regular(path, what="work claim") is None:
                return False
        try:
            return self._create_or_raise(path, about)
        except FileExistsError:
            return False

    def _create_or_raise(self, path: Path, about: dict[str, Any]) -> bool:
        directory_in_place(self.directory, root=self.top, what="the work claims' directory")
        held = (str(path), self.me.token)
        _HELD.add(held)  # before the file exists: never seen as ours yet unheld
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except BaseException:
            _HELD.discard(held)
            raise
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({**self.me.as_record(), "since": time.time(), **about}, f,
                          sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            # A full store: leave no nameless claim that would look live to us too.
            path.unlink(missing_ok=True)
            _HELD.discard(held)
            raise
        fsync_dir(self.directory)
        return True

    def _owner(self, path: Path) -> Owner | None:
        try:
            return Owner.from_record(json.loads(read_regular_text(path)))
        except (OSError, ValueError, RecursionError):  # garbage names no owner
            return None

    def look(self, path: Path) -> tuple[str, os.stat_result | None, Owner | None]:
        """The claim on ``path`` as judged now: (verdict, its stat, its owner)."""
        return self._judged(path)[:3]

    def _judged(self, path: Path) -> tuple[str, os.stat_result | None, Owner | None, str]:
        """``look``'s answer, and what made the claim stale, in words (its
        takeover's log line says what was seen, not the bound alone)."""
        try:
            seen = path.stat()
        except FileNotFoundError:
            self.silence.forget(path)
            return FREE, None, None, ""
        owner = self._owner(path)
        silent = self.silence.silent_for(path, seen)
        if owner is None or owner.host != self.me.host:
            alive = True  # another host's pid cannot be judged here
        elif owner.pid == os.getpid():
            alive = (str(path), owner.token) in _HELD
        else:
            alive = pid_alive(owner.pid)
        verdict = judge(exists=True, heartbeat_age=silent, owner=owner, me=self.me,
                        stale_seconds=self.stale_seconds, owner_alive=alive)
        if alive:
            why = (f"no heartbeat seen for {silent:.0f}s (claim_stale_seconds: "
                   f"{self.stale_seconds:.0f}s)")
        elif owner.pid == os.getpid():
            why = "its owner is this process, and no run of it holds the claim"
        else:
            why = f"its owner, pid {owner.pid}, is gone from this host"
        return verdict, seen, owner, why

    def try_claim(self, path: Path, about: dict[str, Any]) -> tuple[str, Owner | None]:
        """One attempt: ("claimed" | "taken_over" | "live", the owner in the way)."""
        return self.claim_once(path, about)[:2]

    def claim_once(self, path: Path, about: dict[str, Any]) -> tuple[str, Owner | None, str]:
        """``try_claim``'s answer, and why a claim taken over was stale."""
        if self._create(path, about):
            return "claimed", None, ""
        verdict, seen, owner, why = self._judged(path)
        if verdict == LIVE:
            return "live", owner, ""
        if verdict == FREE:  # removed since: try again at once
            return ("claimed", None, "") if self._create(path, about) else ("live", owner, "")
        aside = path.with_name(f"{path.name}.aside-{self.me.token}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return "live", owner, ""  # someone else moved it first: look again later
        moved = aside.stat()
        if (moved.st_ino, moved.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
            # It changed hands or beat between the look and the rename: put it back.
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            aside.unlink(missing_ok=True)
            return "live", owner, ""
        aside.unlink(missing_ok=True)
        self.silence.forget(path)
        if verdict != MINE:
            # Counted by whoever removed the stale claim, at the removal: between
            # the removal and our create another daemon's plain create may win
            # (it then runs as "claimed"), and the takeover must still count once.
            self._count("claims_taken_over", about.get("stage", ""))
        if not self._create(path, about):
            return "live", owner, ""
        return ("claimed" if verdict == MINE else "taken_over"), owner, why

    def beat(self, path: Path) -> str:
        """Touch our claim: OURS; LOST once it is no longer ours (gone, or
        another's: taken over while we ran); UNSURE when the store cannot say
        now (its read or touch failed: EIO, ESTALE on a network store, EMFILE),
        which is no claim lost: the heartbeat tries again."""
        try:
            owner = Owner.from_record(json.loads(read_regular_text(path)))
        except FileNotFoundError:
            return LOST
        except NotARegularFile:
            return LOST  # our claim is a regular file: this is not it
        except OSError:
            return UNSURE
        except (ValueError, RecursionError):
            return LOST  # not what we wrote: another's claim, being written
        if owner != self.me:
            return LOST
        try:
            os.utime(path)
        except FileNotFoundError:
            return LOST
        except OSError:
            return UNSURE
        return OURS

    def release(self, path: Path) -> None:
        """Remove our claim (never another's that took it over). A read or
        removal the store refuses (EIO, ESTALE on a network store) is tried
        again a few times; then the claim is left, said in a warning, and
        never raised: this process claims the work again at once (no run
        holds it: MINE), another daemon after ``stale_seconds``, and either
        finds the work done. Before, a failed read left it without a word,
        and a failed removal raised out of a run already ended."""
        _HELD.discard((str(path), self.me.token))
        for attempt in range(RELEASE_TRIES):
            if attempt:
                time.sleep(RELEASE_RETRY_SECONDS)
            try:
                owner = Owner.from_record(json.loads(read_regular_text(path)))
                if owner == self.me:
                    path.unlink(missing_ok=True)
                return
            except (FileNotFoundError, NotARegularFile, ValueError, RecursionError):
                return  # gone, or not ours: another's, being written, garbage
            except OSError as exc:
                failed = exc
        log.warning("cannot remove our claim %s (%s): it stays until another daemon finds it "
                    "stale (%.0fs without a heartbeat, claim_stale_seconds) or this daemon "
                    "claims the work again", path, failed, self.stale_seconds)

    # --- the context manager around a run ------------------------------------

    @contextlib.asynccontextmanager
    async def held(self, work_id: str, version: int, *, stage: str, name: str,
                   log_context: dict[str, Any] | None = None) -> AsyncIterator[None]:
        """Hold the claim on a work item for the duration of the block, waiting
        (no worker held) while another daemon's live claim is in the way."""
        path = self.path(work_id, version)
        about = {"work_id": work_id, "version": version, "stage": stage, "name": name}
        extra = {"extra": log_context or {}}
        waited = False
        while True:
            try:
                # Shielded: a claim made in the thread must reach the release below,
                # even when the run is cancelled meanwhile (a cancel is taken at the
                # first checkpoint inside the try).
                with anyio.CancelScope(shield=True):
                    outcome, owner, why = await anyio.to_thread.run_sync(
                        self.claim_once, path, about)
            except OSError as exc:
                if infrastructure_cause(exc) is None:
                    raise
                # A full or read-only store: the run itself parks on the same
                # fault (and is then seen in calstream_parked_items), so it goes
                # on unclaimed rather than being retried from here.
                log.warning("%s: cannot write the claim %s (%s); running without it", name,
                            path, exc, **extra)
                yield
                return
            if outcome != "live":
                break
            if not waited:
                waited = True
                self._count("claims_waited", stage)
                log.info("%s: work %s is being run by %s (claim %s); waiting for it", name,
                         work_id[:12], _who(owner), path, **extra)
            await anyio.sleep(self.heartbeat_seconds)
        if outcome == "taken_over":  # counted in try_claim, where it was removed
            log.warning("%s: took over the stale claim of %s on work %s (%s)", name,
                        _who(owner), work_id[:12], why, **extra)
        try:
            async with anyio.create_task_group() as beats:
                beats.start_soon(self._beating, path, name, extra)
                try:
                    yield
                finally:
                    beats.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.release, path)

    async def _beating(self, path: Path, name: str, extra: dict) -> None:
        """Touch the claim every heartbeat until the run ends or the claim is
        lost. A beat the store cannot answer is tried again sooner, for as
        long as it takes: stopped at the first, the claim went stale and
        another daemon ran the same work a second time."""
        unsure_since = None
        while True:
            await anyio.sleep(self.heartbeat_seconds if unsure_since is None
                              else self.heartbeat_seconds * UNSURE_RETRY_SHARE)
            verdict = await anyio.to_thread.run_sync(self.beat, path)
            if verdict == LOST:
                log.warning("%s: our claim %s was taken over (no heartbeat seen for %.0fs); "
                            "this run goes on (the store's commit marker keeps readers safe)",
                            name, path, self.stale_seconds, **extra)
                return
            if verdict == UNSURE and unsure_since is None:
                unsure_since = time.monotonic()
                log.warning("%s: cannot read or touch our claim %s now; its heartbeat tries "
                            "again (another daemon takes the work over after %.0fs without "
                            "one)", name, path, self.stale_seconds, **extra)
            elif verdict == OURS and unsure_since is not None:
                log.info("%s: our claim %s is touched again after %.0fs", name, path,
                         time.monotonic() - unsure_since, **extra)
                unsure_since = None

    def _count(self, metric: str, stage: str) -> None:
        if self.metrics is not None:
            getattr(self.metrics, metric).labels(stage=stage).inc()


def _who(owner: Owner | None) -> str:
    return f"{owner.host} pid {owner.pid}" if owner else "another daemon"
