"""What a stop left in the quarantine directory, found at the watcher's start.

A move into quarantine (quarantine.py) writes the file's note and a mark
``<name>.unreported`` before the move; the mark goes once its dead letter is
acknowledged. A stop can come between: a stop while a move hung on a silent
mount abandoned it (file_reads.FileReads.waited), and the move finished
after; a report the broker did not take was still waiting to be retried; the
process was killed. The file then lay in quarantine with its note and no
dead letter, and nothing ever sent one: it is no longer in the inbox. At
the start, each mark left is one of:

* a move that did not finish: a copy to another filesystem cut off (its
  ``<name>.partial`` is there), a rename that never happened (the claim
  is still empty and the file is still in the inbox), or a copy to another
  filesystem renamed onto the claim whose inbox file was not removed yet
  (the claim holds the same bytes as the file still in the inbox: before,
  the start reported the copy and quarantined the file again as
  ``NAME.1``, two dead letters for one file). The file is still in the
  inbox: the claim, note, mark and partial copy are removed, and the
  start-up scan judges the file again;
* a file moved and not reported: its dead letter is sent from its note
  (the same event id as the one the move would have sent: a reader counts
  it once), then the mark goes.

A note is a file in a directory others write: its ``file:`` line is taken
only if it names a path under the inbox (or the quarantine), lexically.
A note naming any other path (``/etc/shadow``, ``../``, a relative one) is
forged or damaged: its file is reported as itself, the quarantined file,
with a reason saying so; the path it names is never looked at, removed or
written into a letter (before, it was looked up, and named in the letter).

At most ``MAX_PENDING_REPORTS`` marks a start (the rest at the next one):
the quarantine is written by others too, and a forged mark sends at most
one dead letter each, of the note beside it.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from calstream.daemon.deciders.inbox_file import MAX_PENDING_REPORTS
from calstream.daemon.doers.inbox.reports import Rejection, log_file
from calstream.steps.regular_files import open_regular_file

NOTE = ".reason.txt"
UNREPORTED = ".unreported"  # as long as NOTE: the claim's name leaves room for it
PARTIAL = ".partial"
_NOTE_BYTES = 64 << 10  # a note is a few lines: more is no note of ours


@dataclass(frozen=True)
class Leftovers:
    unreported: list[Rejection]  # moved, never reported: to report now
    cleaned: int  # moves that did not finish: undone (the file is in the inbox)
    later: int  # marks beyond this start's share


def unreported_mark(dest: Path) -> Path:
    return dest.with_name(dest.name + UNREPORTED)


def partial_copy(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL)


def leftovers(directory: Path, inbox: Path) -> Leftovers:
    """Runs in a thread: the marks left in ``directory`` (the quarantine of
    ``inbox``), each settled as the module says (unfinished moves undone
    here)."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(UNREPORTED))
    except FileNotFoundError:
        return Leftovers([], 0, 0)
    unreported, cleaned = [], 0
    for name in names[:MAX_PENDING_REPORTS]:
        dest = directory / name[:-len(UNREPORTED)]
        note = dest.with_name(dest.name + NOTE)
        fields = _note_fields(note)
        if fields is None or "reason" not in fields:  # no note of ours: nothing to say
            unreported_mark(dest).unlink(missing_ok=True)
            continue
        source = _inbox_path(fields.get("file", ""), (inbox, directory))
        if source is None:  # forged or damaged: its path neither looked at nor named
            unreported.append(Rejection(
                dest, dest, f"{dest.name}: in quarantine with a note whose file: names no path "
                "under the inbox (forged or damaged); that path was not looked at",
                None, None, _time(None, note)))
            continue
        # Only a file of the inbox is looked at (one the note places in the
        # quarantine is named, never compared, nor its claim undone).
        in_inbox = source.is_relative_to(inbox) and not source.is_relative_to(directory)
        if os.path.lexists(partial_copy(dest)) or (in_inbox and _never_moved(dest, source)):
            for left in (partial_copy(dest), dest, note, unreported_mark(dest)):
                _remove(left)
            cleaned += 1
            log_file(logging.WARNING, "its move into quarantine did not finish before a "
                     "stop: undone, the file is judged again", source)
            continue
        unreported.append(Rejection(
            source, dest, fields["reason"], _or_none(fields.get("exposure_id")),
            _or_none(fields.get("digest")), _time(fields.get("detected_at"), note)))
    return Leftovers(unreported, cleaned, max(0, len(names) - MAX_PENDING_REPORTS))


def _inbox_path(text: str, roots: tuple[Path, ...]) -> Path | None:
    """The path a note's ``file:`` line names, if it lies under one of
    ``roots`` once ``..`` is taken out (lexically: nothing is looked at),
    else None."""
    if not text or "\0" in text or not os.path.isabs(text):
        return None
    path = Path(os.path.normpath(text))
    inside = any(path != root and path.is_relative_to(root) for root in roots)
    return path if inside else None


def _never_moved(dest: Path, source: Path) -> bool:
    """The file is still at its inbox name and the claim holds nothing of
    its own: empty (the rename never happened; a file quarantined empty has
    left the inbox), or the same bytes as the file still there (a copy to
    another filesystem renamed onto the claim, the inbox's file not removed
    yet)."""
    try:
        claim = os.lstat(dest)
        there = os.lstat(source)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if source == dest:
        return False
    if stat.S_ISDIR(claim.st_mode):  # a directory named like an exposure: moved whole
        return not os.listdir(dest)
    if claim.st_size == 0 and not stat.S_ISLNK(claim.st_mode):
        return True
    return _same_file(dest, claim, source, there)


def _same_file(dest: Path, claim: os.stat_result, source: Path, there: os.stat_result) -> bool:
    """``dest`` a whole copy of ``source`` (a link: one to the same place)."""
    if stat.S_ISLNK(claim.st_mode) or stat.S_ISLNK(there.st_mode):
        return (stat.S_ISLNK(claim.st_mode) and stat.S_ISLNK(there.st_mode)
                and os.readlink(dest) == os.readlink(source))
    if not (stat.S_ISREG(claim.st_mode) and stat.S_ISREG(there.st_mode)) \
            or claim.st_size != there.st_size:
        return False
    with open_regular_file(dest) as a, open_regular_file(source) as b:
        while chunk := a.read(1 << 20):
            if chunk != b.read(len(chunk)):
                return False
    return True


def _note_fields(note: Path) -> dict[str, str] | None:
    try:
        with open(note, "rb") as f:
            text = f.read(_NOTE_BYTES + 1)
    except OSError:
        return None
    if len(text) > _NOTE_BYTES:
        return None
    fields: dict[str, str] = {}
    for line in text.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(": ")
        if sep and key not in fields:
            fields[key] = value
    return fields


def _or_none(value: str | None) -> str | None:
    return None if value in (None, "", "-") else value


def _time(text: str | None, note: Path) -> float:
    try:
        return datetime.fromisoformat(text or "").timestamp()
    except ValueError:
        try:
            return os.stat(note).st_mtime
        except OSError:
            return 0.0


def _remove(path: Path) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log_file(logging.WARNING, f"could not be removed ({exc})", path)
