"""Which paths are the inbox watcher's, and how it hears of them.

Filesystem events only say *that* something happened to a path, never that a
file is finished (inotify reports the create long before the writer is done,
and network filesystems report nothing at all). So events, a polling observer
and the watcher's periodic rescan are all just hints that put a path on the
list of tracked files.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from calstream.daemon.deciders.inbox_file import Sig
from calstream.daemon.doers.digest_memo import stat_sig  # noqa: F401 - the inbox's
from calstream.daemon.doers.inbox.reports import log, log_fields

if TYPE_CHECKING:
    from calstream.daemon.doers.file_reads import FileReads

# Names writers use while a file is in flight; the final name arrives by
# rename, which the observer reports as a create or move on that name.
IGNORED_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", "~")

# Reading a file we watch makes inotify report open, close-no-write and
# attrib events on it; listening to those would make every check trigger the
# next one.
_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent]


class InboxScope:
    """The files the watcher looks after: not hidden, not in flight, not its
    own ledger or quarantine; in subdirectories only when ``recursive``."""

    def __init__(self, inbox: Path, quarantine: Path, ledger_path: Path, recursive: bool) -> None:
        self.inbox = inbox
        self.quarantine = quarantine
        self.ledger_path = ledger_path
        self.recursive = recursive

    def is_candidate(self, path: Path) -> bool:
        name = path.name
        if name.startswith(".") or name.endswith(IGNORED_SUFFIXES):
            return False
        if path == self.ledger_path or name.startswith(self.ledger_path.name + "-"):
            return False  # sqlite's -journal/-wal beside a ledger kept in the inbox
        if self.recursive:
            try:
                rel = path.relative_to(self.inbox)
            except ValueError:
                return False
            if path.is_relative_to(self.quarantine):
                return False
            return not any(part.startswith(".") for part in rel.parts[:-1])
        return path.parent == self.inbox

    def list_files(self, answered: Callable[[], None] = lambda: None) -> dict[Path, Sig]:
        """Runs in a thread: stat only, never opens a file; ``answered()``
        after each entry read and each stat (file_reads.FileReads.listing)."""
        found: dict[Path, Sig] = {}
        dirs = [self.inbox]
        while dirs:
            d = dirs.pop()
            entries = []
            try:
                with os.scandir(d) as listed:  # a directory's read answers in batches
                    for e in listed:
                        entries.append(e)
                        answered()
            except OSError as exc:
                log.warning("cannot list %s: %s", d, exc, extra=log_fields(None, d))
                continue
            for e in entries:
                p = Path(e.path)
                try:
                    st = e.stat()
                    answered()
                except OSError:
                    continue  # vanished between listing and stat
                if stat.S_ISDIR(st.st_mode) and not e.name.endswith(".fits"):
                    if self._descend(e.name, p):
                        dirs.append(p)
                elif self.is_candidate(p):
                    found[p] = stat_sig(st)
        return found

    def _descend(self, name: str, path: Path) -> bool:
        return (
            self.recursive and not name.startswith(".") and not path.is_relative_to(self.quarantine)
        )


# The events after which a writer is done with the file: IN_CLOSE_WRITE, and
# IN_MOVED_TO (a rename into place, the usual way to deliver whole files).
_WRITER_DONE = (FileClosedEvent, FileMovedEvent)


def _native_observer() -> Any:
    """inotify on Linux with "full" move events: a file moved in from
    another directory is then a move (IN_MOVED_TO), not a create, so it
    needs no settle wait either."""
    if sys.platform.startswith("linux"):
        from watchdog.observers.inotify import InotifyObserver

        return InotifyObserver(generate_full_events=True)
    return Observer()


def _stop_and_join(observer: Any) -> None:
    observer.stop()  # joins its emitters, one of which may be listing the inbox
    observer.join()


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[str | bytes, bool], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        path = event.dest_path if isinstance(event, FileMovedEvent) else event.src_path
        if path:  # a move out of the inbox has no destination here
            self._notify(path, isinstance(event, _WRITER_DONE))


class ObserverBridge:
    """A watchdog observer (inotify, or polling) whose events land, as paths,
    in a set the watcher's loop drains; a burst of events is one wake-up."""

    def __init__(
        self, scope: InboxScope, wake: Callable[[], None], *, polling: bool, poll_interval: float,
        reads: FileReads,
    ) -> None:
        self.scope = scope
        self.reads = reads  # the observer's start and stop are timed as the inbox's reads
        self.polling = polling
        self.poll_interval = poll_interval
        self._wake = wake
        self._lock = threading.Lock()  # guards _incoming, _wake_scheduled and _observer
        # path -> whether its latest event said the writer was done with it
        self._incoming: dict[Path, bool] = {}
        self._wake_scheduled = False
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._observer: Any = None
        self._watched: tuple[int, int] | None = None  # (device, inode) the observer watches

    @property
    def kind(self) -> str:
        return "polling" if isinstance(self._observer, PollingObserver) else "inotify"

    async def start(self) -> None:
        """The observer started on the inbox. Timed as a read of the inbox
        (ReadHung): a polling observer lists the inbox as it starts, and
        inotify adds its watch there; on a silent mount either blocked, in
        a thread no stop could cancel. One started after its time ran out
        is kept all the same (and stopped with the watcher), so a start
        tried again does not start a second one."""
        self._token = anyio.lowlevel.current_token()
        await self.reads.timed(lambda _: self._start_unless_started(), self.scope.inbox,
                               self.reads.read_seconds, what="watch")

    async def stop(self) -> None:
        """The observer stopped, timed as a read of the inbox: a polling
        observer's stop waits for its listing under way, which on a silent
        mount never ends. It was made on the event loop: a stop of the
        daemon, or a watch moved to a remounted inbox (its old mount dead),
        froze the whole daemon. Past its time it is left to end by itself
        (its threads do not keep the process from exiting)."""
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            await self.reads.timed(lambda _: _stop_and_join(observer), self.scope.inbox,
                                   self.reads.read_seconds, what="watch's stop")

    async def rewatch(self) -> None:
        """The observer started again, on the directory now under the inbox's
        name (watch_keeper.py)."""
        await self.stop()
        await self.start()

    def _start_unless_started(self) -> None:
        """Runs in a thread."""
        with self._lock:
            if self._observer is not None:  # an earlier start, done after its time ran out
                return
        observer = self._start_observer()
        with self._lock:
            self._observer = observer

    def watch_problem(self) -> str | None:
        """Why the observer no longer watches the inbox, or None. Runs in a
        thread: one stat."""
        try:
            st = os.stat(self.scope.inbox)
        except OSError as exc:
            return f"is gone ({exc.strerror or exc})"
        if not stat.S_ISDIR(st.st_mode):
            return "is no directory"
        if (st.st_dev, st.st_ino) != self._watched:
            return "is another directory than the one watched (made again, or mounted over)"
        observer = self._observer
        if observer is None or not observer.is_alive() \
                or not all(e.is_alive() for e in observer.emitters):
            return "stopped being watched"
        return None

    def _start_observer(self) -> Any:
        # Looked up at each event, so that a test can cut the events off.
        handler = _Handler(lambda raw, writer_done: self.notify(raw, writer_done))
        inbox = str(self.scope.inbox)
        # Taken before the watch: a directory replaced in between is then
        # found different at the next check and watched again, never missed.
        st = os.stat(inbox)
        self._watched = (st.st_dev, st.st_ino)
        if not self.polling:
            observer = _native_observer()
            try:
                observer.schedule(
                    handler, inbox, recursive=self.scope.recursive, event_filter=_EVENTS
                )
                observer.start()
                return observer
            except OSError as exc:
                # inotify instance/watch limits are per user and easily hit on
                # shared hosts; polling is slower but loses nothing.
                log.warning(
                    "inotify unavailable for %s (%s); falling back to polling",
                    inbox,
                    exc,
                    extra=log_fields(None, self.scope.inbox),
                )
        observer = PollingObserver(timeout=self.poll_interval)
        observer.schedule(handler, inbox, recursive=self.scope.recursive, event_filter=_EVENTS)
        observer.start()
        return observer

    def notify(self, raw: str | bytes, writer_done: bool = False) -> None:
        """Runs in the observer thread. ``writer_done``: a close-write or a move
        into the inbox; a later event about the same path (a new write) undoes it."""
        path = Path(os.fsdecode(raw))
        if not self.scope.is_candidate(path):
            return
        with self._lock:
            self._incoming[path] = writer_done
            if self._wake_scheduled:
                return  # a write burst becomes one wake-up
            self._wake_scheduled = True
        try:
            anyio.from_thread.run_sync(self._wake, token=self._token)
        except Exception:
            pass  # the event loop is gone: we are shutting down

    def drain(self) -> dict[Path, bool]:
        """The paths events named since the last drain, each with whether its
        latest event said the writer was done with it."""
        with self._lock:
            paths, self._incoming = self._incoming, {}
            self._wake_scheduled = False
        return paths
