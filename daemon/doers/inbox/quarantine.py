"""Bad files: moved to the quarantine directory with a ``.reason.txt``, and
reported through the caller's ``on_reject`` (retried until it succeeds, see
``calstream.daemon.deciders.inbox_file`` for the bounds)."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from calstream.daemon.deciders.inbox_file import (
    MAX_PENDING_REPORTS,
    InboxRules,
    Sig,
    retry_after,
)
from calstream.daemon.doers.digest_memo import stat_sig
from calstream.daemon.doers.file_reads import FileReads, ReadHung
from calstream.daemon.doers.inbox.quarantine_leftovers import (
    NOTE,
    partial_copy,
    unreported_mark,
)
from calstream.daemon.doers.inbox.reports import Counts, Rejection, exposure_id_of, log_file
from calstream.daemon.doers.parking import Parking
from calstream.daemon.operations.logs import escape_controls
from calstream.steps.failures import infrastructure_cause
from calstream.steps.regular_files import open_new, open_regular_file


class NoLongerJudged(Exception):
    """The name holds another file than the one judged (a correction renamed
    over it): nothing was moved; the watcher looks at it afresh."""


class QuarantineBlocked(Exception):
    """The quarantine directory refuses a file for now; try again in ``delay`` seconds."""

    def __init__(self, delay: float):
        super().__init__(f"quarantine unavailable; again in {delay:g} s")
        self.delay = delay


@dataclass(eq=False)
class PendingReport:
    rejection: Rejection
    failures: int = 0
    retry_at: float = 0.0  # monotonic
    busy: bool = False


@dataclass(eq=False)
class Quarantine:
    directory: Path
    on_reject: Callable[[Rejection], Awaitable[None]]
    rules: InboxRules
    counts: Counts
    reads: FileReads  # the move is timed as the inbox's reads are (file_reads.py)
    pending: list[PendingReport] = field(default_factory=list)  # on_reject failed: to retry
    # Parking for a file the directory refuses (full, read-only): doers/parking.py.
    # ``root``: the directory written, named where a full disk's error names none.
    parking: Callable[..., Parking] | None = None
    _parked: dict[Path, Parking] = field(default_factory=dict)

    async def move_aside(
        self, path: Path, reason: str, digest: str | None, detected_at: float,
        judged: Sig | None = None,
    ) -> Rejection:
        """Move ``path`` to the quarantine directory (``quarantined_to`` is
        None if it could not be moved: it is then left in the inbox). Raises
        QuarantineBlocked when the directory refuses it for now (full,
        read-only): the file stays in the inbox, parked, to be moved later.
        ``judged``: the stat of the file the reason is about; NoLongerJudged
        when the name holds another file just before the move."""
        eid = exposure_id_of(path)
        try:
            # In the door's own threads, timed: in anyio's, a move on a mount
            # gone silent held a thread the rest of the daemon shares, and a
            # stop, for ever, with nothing shown.
            dest = await self.reads.waited(
                lambda p: self._move(p, reason, eid, digest, detected_at, judged), path,
                self.reads.given(judged[0] if judged else 0), what="move into quarantine",
                late=lambda exc: self._park(path, exc.cause, exc))
        except NoLongerJudged:
            raise
        except ReadHung as exc:  # not begun: an earlier read of it, or too many, still hung
            raise QuarantineBlocked(self._park(path, exc.cause, exc)) from exc
        except Exception as exc:
            cause = infrastructure_cause(exc)
            if cause is not None and self.parking is not None:
                raise QuarantineBlocked(self._park(path, cause, exc)) from exc
            dest = None
            log_file(logging.ERROR, f"could not quarantine ({exc!r})", path)
        self.resumed(path)
        self.counts.rejected += 1
        log_file(
            logging.WARNING,
            f"rejected: {reason}" + (f" -> {dest}" if dest else " (left in the inbox)"),
            path,
        )
        return Rejection(path, dest, reason, eid, digest, detected_at)

    def _park(self, path: Path, cause: str, exc: BaseException) -> float:
        """``path``'s move parked on ``cause``: the seconds before it is tried again."""
        if self.parking is None:
            log_file(logging.WARNING, f"cannot be quarantined yet ({exc}); again in "
                     f"{self.rules.retry_max:g} s", path)
            return self.rules.retry_max
        parking = self._parked.setdefault(path, self.parking(f"{path.name}: quarantine",
                                                            root=self.directory))
        # The directory that refused: the inbox's when its error names a path
        # outside the quarantine (a read-only inbox refuses the file's
        # removal), which the label named as the quarantine's.
        parking.root = self._refusing(path, exc)
        return parking.failed(cause, exc)

    def _refusing(self, path: Path, exc: BaseException) -> Path:
        named = getattr(exc, "filename", None)
        if isinstance(named, str | bytes | os.PathLike) and \
                not Path(os.fsdecode(named)).absolute().is_relative_to(self.directory):
            return path.parent
        return self.directory

    def resumed(self, path: Path) -> None:
        """``path`` is no longer waiting for the directory (moved, or gone)."""
        parking = self._parked.pop(path, None)
        if parking is not None:
            parking.resumed()

    async def report(self, rejection: Rejection) -> None:
        """Through ``on_reject``; kept for a retry if that fails."""
        await self._report(PendingReport(rejection))

    def due(self, now: float) -> tuple[list[PendingReport], float | None]:
        """The reports to retry now (marked busy), and when the next one is due."""
        ready, next_at = [], None
        for r in self.pending:
            if r.busy:
                continue
            if r.retry_at <= now:
                r.busy = True
                ready.append(r)
            else:
                next_at = r.retry_at if next_at is None else min(next_at, r.retry_at)
        return ready, next_at

    async def retry(self, r: PendingReport) -> None:
        try:
            if await self._report(r):
                self.pending.remove(r)
        finally:
            r.busy = False

    async def _report(self, r: PendingReport) -> bool:
        try:
            await self.on_reject(r.rejection)
        except Exception as exc:
            self._failed(r, exc)
            return False
        if r.rejection.quarantined_to is not None:
            await self._reported(r.rejection)
        return True

    async def _reported(self, rejection: Rejection) -> None:
        """Its dead letter acknowledged: the mark goes. One left (the
        directory did not answer) sends the letter again at the next start,
        under the same event id: a reader counts it once."""
        mark = unreported_mark(rejection.quarantined_to)
        try:
            await self.reads.timed(lambda p: p.unlink(missing_ok=True), mark,
                                   self.reads.read_seconds, what="quarantine's mark removal")
        except Exception as exc:  # noqa: BLE001 - ReadHung or the disk's error: said, not fatal
            log_file(logging.WARNING, f"its dead letter was sent, but its mark {mark.name} "
                     f"stays ({exc}): the letter is sent again at the next start", rejection.path)

    def _failed(self, r: PendingReport, exc: Exception) -> None:
        self.counts.errors += 1
        r.failures += 1
        retry = retry_after(r.failures, now=time.monotonic(), rules=self.rules)
        r.retry_at = retry.at
        if r not in self.pending:
            self._keep(r)
        log_file(
            logging.WARNING,
            f"on_reject failed (attempt {r.failures}): {exc!r}; retrying in {retry.delay:g} s",
            r.rejection.path,
        )

    def _keep(self, r: PendingReport) -> None:
        if len(self.pending) >= MAX_PENDING_REPORTS:
            dropped = next((p for p in self.pending if not p.busy), None)
            if dropped is not None:
                self.pending.remove(dropped)
                log_file(
                    logging.ERROR,
                    f"{MAX_PENDING_REPORTS} rejection reports pending: this one is dropped "
                    f"(its quarantine note stays; it is sent at the next start): "
                    f"{dropped.rejection.reason}",
                    dropped.rejection.path,
                )
        self.pending.append(r)

    def _move(
        self, path: Path, reason: str, eid: str | None, digest: str | None, detected_at: float,
        judged: Sig | None = None,
    ) -> Path:
        """Runs in a thread. Never overwrites: an earlier file of the same
        name may be the evidence an operator needs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        dest = self._claim_name(path.name, directory=path.is_dir() and not path.is_symlink())
        note = dest.with_name(dest.name + _NOTE)
        lines = [
            f"reason: {reason}",
            f"file: {path}",
            f"exposure_id: {eid or '-'}",
            f"digest: {digest or '-'}",
            f"detected_at: {_iso(detected_at)}",
            f"quarantined_at: {_iso(time.time())}",
        ]
        # Escaped: a name's control characters or non-UTF-8 bytes could not
        # be written (or would repaint the terminal of whoever reads it).
        text = "\n".join(escape_controls(line) for line in lines) + "\n"
        mark, partial = unreported_mark(dest), partial_copy(dest)
        try:
            # The note first: a file is never in quarantine without its reason
            # (a full directory refuses the note, and the file stays put).
            # Created anew: a link someone put at the name it will have (it
            # follows from the file's) would take the write out of quarantine.
            with open_new(note, binary=True) as f:
                f.write(text.encode("utf-8"))
            # Until its dead letter is acknowledged (report): a stop before
            # that left the file reported by nothing (quarantine_leftovers.py).
            with open_new(mark, binary=True) as f:
                f.write(b"its dead letter is not acknowledged yet\n")
            # Judged, hashed for the note: seconds in which a correction may
            # be renamed over it, which the move would take with this reason.
            # Checked as the watcher looks (a link: what it leads to).
            if judged is not None and _sig_now(path) != judged:
                raise NoLongerJudged(path)
            try:
                os.replace(path, dest)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                if path.is_dir() and not path.is_symlink():
                    shutil.move(path, dest)
                else:
                    # Another filesystem: a copy under its own name, then
                    # renamed onto the claim, then the inbox's unlinked. A
                    # copy cut off by a stop is known by its name and undone
                    # at the next start, the file still in the inbox.
                    # A read-only inbox refuses the unlink, at the end:
                    # asked first, not after a copy of the whole file made
                    # and thrown away at every re-check of its park.
                    _unless_read_only(path.parent)
                    _copy_aside(path, partial)
                    os.replace(partial, dest)
                    os.unlink(path)
        except BaseException:
            partial.unlink(missing_ok=True)
            mark.unlink(missing_ok=True)
            note.unlink(missing_ok=True)
            if dest.is_dir():
                dest.rmdir()
            else:
                dest.unlink(missing_ok=True)
            raise
        return dest

    def _claim_name(self, name: str, *, directory: bool = False) -> Path:
        """A free name in the quarantine directory, claimed atomically (the
        move then lands on the claim): name, then name.1, name.2, ... A
        directory (named like an exposure) can only replace an empty one."""
        stem, ext = (name[:-5], ".fits") if name.endswith(".fits") else os.path.splitext(name)
        # Room for ".<n>" and the note's suffix: a name of 255 bytes is a
        # file, but its note's name would be none. Shortened, the original
        # name is still in the note ("file:").
        room = _NAME_MAX - len(_NOTE) - len(".999") - len(os.fsencode(ext))
        if len(os.fsencode(name)) > room + len(os.fsencode(ext)):
            stem = os.fsdecode(os.fsencode(stem)[:room - 1]) + "~"
            name = stem + ext
        n = 0
        while True:
            dest = self.directory / (name if n == 0 else f"{stem}.{n}{ext}")
            try:
                if directory:
                    os.mkdir(dest)
                else:
                    os.close(os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                return dest
            except FileExistsError:
                n += 1


def _copy_aside(path: Path, partial: Path) -> None:
    """``path`` copied to ``partial``, created anew (open_new: a link someone
    put at that name would take the copy out of quarantine); a link is
    copied as the link it is, a FIFO or device refused (open_regular_file)."""
    if path.is_symlink():
        os.symlink(os.readlink(path), partial)
        return
    with open_regular_file(path) as src, open_new(partial, binary=True) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    shutil.copystat(path, partial)


def _unless_read_only(directory: Path) -> None:
    """EROFS naming ``directory`` if its file system is mounted read-only."""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))


def _sig_now(path: Path) -> Sig | None:
    try:
        return stat_sig(os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


_NOTE = NOTE
_NAME_MAX = 255


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
