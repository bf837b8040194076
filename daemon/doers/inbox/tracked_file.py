"""One tracked inbox file, and one look at it: the facts gathered, the decider
asked, its decision carried out.

Kept apart from ``watcher`` (the loop that finds files, tracks them and
starts a step for each one that is due): a step looks at its file one fact
deeper at a time (stat, FITS layout, identity and digest: file_reads.py),
asks the pure ``deciders/inbox_file.py`` what follows, and waits, retries,
forgets it, rejects it (quarantine.py) or announces it (announcer.py). An
error of one file never stops the watcher: it is retried, bounded.
``FileSteps`` is a mixin of ``Watcher``, whose reads, rules, ledger and
counts it uses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from calstream.daemon.deciders import inbox_file as decide
from calstream.daemon.deciders.inbox_file import FileState, Sig
from calstream.daemon.doers.file_reads import ReadHung
from calstream.daemon.doers.inbox.announcer import AnnouncementFailed
from calstream.daemon.doers.inbox.quarantine import NoLongerJudged, QuarantineBlocked
from calstream.daemon.doers.inbox.reports import Arrival, log_file
from calstream.daemon.doers.parking import Parking
from calstream.steps.exposure import BadExposure
from calstream.steps.failures import infrastructure_cause


class StorageFailed(Exception):
    """A read of the file failed for its storage's fault (``cause``), not
    the file's: raised out of the step, as ReadHung is, to park the file."""

    def __init__(self, cause: str, error: OSError) -> None:
        super().__init__(str(error))
        self.cause, self.error = cause, error


@dataclass(eq=False)
class Track:
    """A file the watcher looks at until it is announced, rejected or gone."""

    path: Path
    source: str  # how it was found: "watch" | "startup-scan"
    detected_at: float  # epoch seconds
    first_seen: int  # its place in the order files were found: its turn (file_reads.py)
    state: FileState = FileState()
    arrival: Arrival | None = None  # identified; waiting for (re)announcement
    next_check: float = 0.0  # monotonic
    retry_at: float = 0.0  # monotonic; backoff after a failure
    busy: bool = False
    touched: bool = False  # an event came in while a step was running
    # The latest event said its writer closed it or moved it in: no settle wait.
    writer_done: bool = False
    parking: Parking | None = None  # its announcement's, while the broker refuses it
    read_parking: Parking | None = None  # its reads', while its storage does not answer
    hung_reads: int = 0  # reads in a row its storage failed (hung, a mount gone; without parking)


class FileSteps:
    async def _step(self, t: Track) -> None:
        t.touched = False
        try:
            await self._advance(t)
            self._read_answered(t)
        except ReadHung as exc:
            await self._carry_out(t, self._read_hung(t, exc))
        except StorageFailed as failed:
            await self._carry_out(t, self._storage_fault(t, failed.cause, failed.error))
        except Exception as exc:
            # A stat of it that failed for its storage's fault: counted as
            # unexpected, eight of them (a few minutes of a mount gone) gave
            # the file up, not looked at again until it changed, once seen.
            cause = await self._storage_cause(t, exc) if isinstance(exc, OSError) else None
            if cause is not None:
                await self._carry_out(t, self._storage_fault(t, cause, exc))
                return
            # Never let one file stop the watcher; try it again later (bounded).
            self._counts.errors += 1
            t.state, decision = decide.after_unexpected_error(
                t.state, now=time.monotonic(), rules=self.rules
            )
            retrying = isinstance(decision, decide.RetryLater)
            then = f"; retrying in {decision.delay:g} s" if retrying else ""
            log_file(logging.ERROR, f"unexpected error{then}", t.path, exc_info=True)
            await self._carry_out(t, decision)
        finally:
            t.busy = False
            self._kick()

    async def _advance(self, t: Track) -> None:
        """Gather the facts the decider asks for, one look deeper each time,
        until it decides something other than looking deeper."""
        sig, link_outside = await self.reads.look(t.path, self.roots)
        seen_before = t.state.sig is not None
        # (exposure id, digest) the ledger recorded the file with, as it is now.
        known = await self._announcer.ledger.known(t.path, sig) \
            if not seen_before and sig is not None and link_outside is None else None
        # No write to wait out: the writer said it was done, or the file is as
        # it was when it was last announced whole (a restart's scan).
        writer_done = t.writer_done or known is not None
        t.state, decision = decide.after_stat(
            t.state,
            name=t.path.name,
            sig=sig,
            handled_sig=self._done.get(t.path),
            now=time.monotonic(),
            age=time.time() - sig[1] / 1e9 if sig else 0.0,
            rules=self.rules,
            writer_done=writer_done,
            link_outside=link_outside,
            # A start's file as it was announced, whose products exist: done,
            # unread (its products' look-up only for such a file).
            done_before=known is not None and t.source == "startup-scan"
            and await self._announcer.products_exist(*known, t.path),
        )
        if decide.is_done_before(decision):
            self._counts.recorded += 1
        if not t.state.identified:
            t.arrival = None  # new content: identified afresh
        if not seen_before and t.state.sig is not None:
            self._counts.seen += 1
        if isinstance(decision, decide.CheckStructure | decide.ReadIdentity):
            async with self.reads.turn(t.first_seen):
                if isinstance(decision, decide.CheckStructure):
                    decision = await self._check_structure(t, sig)
                if isinstance(decision, decide.ReadIdentity):
                    decision = await self._read_identity(t, sig)
        await self._carry_out(t, decision)

    async def _check_structure(self, t: Track, sig: Sig) -> decide.Decision:
        try:
            layout = await self.reads.layout(t.path)
        except FileNotFoundError:
            return decide.Forget(still_there=False)
        except OSError as exc:
            return await self._unreadable(t, exc)
        t.state, decision = decide.after_structure(
            t.state, name=t.path.name, sig=sig, layout=layout, now=time.monotonic(),
            rules=self.rules)
        return await self._unless_changed(t, sig, decision)

    async def _unless_changed(self, t: Track, sig: Sig, decision: decide.Decision
                              ) -> decide.Decision:
        if not isinstance(decision, decide.Reject):
            return decision
        return decide.unless_changed(decision, sig=sig, sig_now=await self.reads.sig(t.path),
                                     now=time.monotonic())

    async def _read_identity(self, t: Track, sig: Sig) -> decide.Decision:
        try:
            info = await self.reads.identity(t.path)
            digest = await self._announcer.ledger.cached_digest(t.path, info.exposure_id, sig)
            if digest is None:
                digest = await self.reads.digest(t.path, sig[0])
        except BadExposure as exc:
            decision = await self._unless_changed(t, sig, decide.Reject(str(exc)))
            if isinstance(decision, decide.Reject):  # its digest, for the quarantine record
                decision = decide.Reject(decision.reason,
                                         await self.reads.digest_or_none(t.path, sig[0]))
            return decision
        except FileNotFoundError:
            return decide.Forget(still_there=False)
        except OSError as exc:
            return await self._unreadable(t, exc)
        t.state, decision = decide.after_identity(
            t.state, sig=sig, sig_after_read=await self.reads.sig(t.path), now=time.monotonic()
        )
        if isinstance(decision, decide.Announce):
            t.arrival = Arrival(
                path=t.path,
                exposure_id=info.exposure_id,
                digest=digest,
                size=sig[0],
                header=info.header,
                detected_at=t.detected_at,
                source="watch" if t.state.rewritten else t.source,
            )
        return decision

    def _read_hung(self, t: Track, exc: ReadHung) -> decide.RetryLater:
        """The storage under the file does not answer (a network mount gone
        silent): an infrastructure fault, retried with jitter, then parked
        with a metric until a read answers; never held against the file
        (no quarantine), whose bytes nobody has seen."""
        return self._storage_fault(t, exc.cause, exc)

    def _storage_fault(self, t: Track, cause: str, exc: BaseException) -> decide.RetryLater:
        now = time.monotonic()
        if self._parking is None:
            t.hung_reads += 1
            retry = decide.retry_after(t.hung_reads, now=now, rules=self.rules)
            log_file(logging.WARNING, f"{exc}; retrying in {retry.delay:g} s", t.path)
            return retry
        if t.read_parking is None:
            t.read_parking = self._parking(f"{t.path.name}: its read")
        delay = t.read_parking.failed(cause, exc)
        return decide.RetryLater(at=now + delay, delay=delay)

    def _read_answered(self, t: Track) -> None:
        t.hung_reads = 0
        if t.read_parking is not None:
            t.read_parking.resumed()
            t.read_parking = None

    async def _unreadable(self, t: Track, exc: OSError) -> decide.Decision:
        """A read that failed: the file's fault (a damaged file, counted
        towards calling it unreadable), unless its storage's. A stale
        handle or a transport gone (steps/failures.py: mount_gone) is the
        mount's; so is EIO when a second look at its directory (listed and
        written to, as a run's: steps/mount_health.py) fails too: a soft
        mount whose server is gone; so is a permission error when the
        file's neighbours refuse this user too (a mount with the wrong owner
        or id mapping: every file would have been quarantined, one by one;
        one file refused among neighbours that open is its own). Those are
        parked until a
        read answers, never counted: after a few tries a good delivery was
        quarantined as unreadable, dead-lettered bad_file, and left unread
        once the mount came back."""
        cause = await self._storage_cause(t, exc)
        if cause is not None:
            raise StorageFailed(cause, exc) from exc
        t.state, decision = decide.after_read_error(
            t.state, name=t.path.name, error=str(exc), now=time.monotonic(), rules=self.rules
        )
        if isinstance(decision, decide.RetryLater):
            log_file(logging.WARNING, f"cannot read ({exc}); retrying in {decision.delay:g} s",
                     t.path)
        return decision

    async def _storage_cause(self, t: Track, exc: OSError) -> str | None:
        """The infrastructure fault behind ``exc`` from a read of ``t``'s
        file, or None (the file's own)."""
        return infrastructure_cause(exc) or await self.reads.mount_fault(t.path, exc)

    async def _carry_out(self, t: Track, decision: decide.Decision) -> None:
        match decision:
            case decide.Wait(until=until, note=note):
                if note:
                    log_file(logging.INFO, note, t.path)
                t.next_check = until
            case decide.RetryLater(at=at):
                t.retry_at = at
            case decide.Forget(still_there=still_there, why=why, gave_up=gave_up):
                if why:
                    log_file(logging.ERROR if gave_up else logging.DEBUG, why, t.path)
                self._forget(t, still_there=still_there)
            case decide.Reject(reason=reason, digest=digest):
                await self._reject(t, reason, digest)
            case decide.Announce():
                await self._announce(t)

    async def _announce(self, t: Track) -> None:
        a, sig = t.arrival, t.state.sig
        assert a is not None and sig is not None
        try:
            dealt_with = await self._announcer.announce(a, sig)
        except AnnouncementFailed as exc:
            if exc.refused:
                await self._reject(t, str(exc), a.digest)
                return
            t.state, retry = decide.after_announce_failed(t.state, now=time.monotonic(),
                                                          rules=self.rules)
            if self._parking is None:
                t.retry_at = retry.at
                log_file(logging.WARNING, f"on_arrival failed (attempt {t.state.failures}): "
                         f"{exc}; retrying in {retry.delay:g} s", t.path, a)
                return
            # An infrastructure fault as any other: jittered retries, then
            # parked with a metric, re-checked until it clears (doers/parking.py).
            # Without, a burst of files retried in step and showed nowhere.
            if t.parking is None:
                t.parking = self._parking(f"{t.path.name}: its announcement")
            cause = exc.__cause__ or exc
            t.retry_at = time.monotonic() + t.parking.failed(
                exc.cause or self._fault_of(cause) or "unknown", cause)
            return
        if dealt_with:
            self._forget(t, still_there=True)
        else:  # the same content under another path is being announced
            t.next_check = time.monotonic() + self.rules.look_interval

    async def _reject(self, t: Track, reason: str, digest: str | None) -> None:
        try:
            rejection = await self.quarantine.move_aside(t.path, reason, digest, t.detected_at,
                                                         judged=t.state.sig)
        except QuarantineBlocked as blocked:  # left in the inbox, parked: looked at again then
            t.retry_at = time.monotonic() + blocked.delay
            t.state = decide.move_parked(t.state, decide.Reject(reason, digest))
            return
        except NoLongerJudged:  # another file has the name now: judged afresh
            t.next_check = time.monotonic()
            return
        # Left in the inbox, it is remembered so the rescan does not reject it
        # again until it changes.
        self._forget(t, still_there=rejection.quarantined_to is None)
        await self.quarantine.report(rejection)
