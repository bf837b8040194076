"""Pointing holds as operators see them, one view for ``calstream holds
list``, ``calstream status`` and the console.

What is shown is what the planner believes: its own records, from its
ledger, when the work directory given is the planner's (the embedded
default's ``--work-dir``, or the daemon's own for its console); the holds
topic's last record of an exposure only beside it, marked, when it says
otherwise (anyone who can write to the broker can write one, and the
planner takes no release it did not decide: deciders/holds.py,
``hold_to_restore``). Where the ledger is not, the topic's records, marked
as not checked. status and the console once showed the topic's records
alone: a forged release hid a hold the planner keeps, a forged hold was
shown as the planner's.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from calstream.daemon.deciders.holds import Holds, holds_shown
from calstream.daemon.doers.file_reads import WORK_DIR_HUNG, FileReads, ReadHung
from calstream.daemon.doers.planner_disk_records import planner_holds_at
from calstream.topics import contract

# The planner's ledger read for a view at most this long: within the time
# `calstream status` and the console give the broker's whole view (10-15 s).
LEDGER_SECONDS = 5.0


def last_holds(records, unreadable: Callable[[], None] | None = None, *,
               into: Holds | None = None) -> Holds:
    """The last hold record per exposure of the holds topic's ``records``
    (added to ``into``, the last of the records read before them: a topic
    folded a fetch at a time, never held whole); ``unreadable`` is called
    for each record that is no hold message."""
    latest: Holds = {} if into is None else into
    for record in records:
        if record.value is None:  # a tombstone: its key is anyone's bytes, or none
            latest.pop(record.key.decode("utf-8", "replace") if record.key else "", None)
            continue
        try:
            hold = contract.decode(record.value, expected="hold")
        except contract.InvalidMessage:
            if unreadable is not None:
                unreadable()
            continue
        # The view's own fields are ours to say: a record (anyone's: its
        # schema lets it carry fields of its own) that carried
        # "holds_topic" was shown as the planner's hold, marked as if the
        # topic said otherwise ("[the holds topic says released ...]").
        latest[hold["exposure_id"]] = {k: v for k, v in hold.body.items()
                                       if k not in VIEW_FIELDS}
    return latest


# What holds_shown adds to a row: never taken from a record.
VIEW_FIELDS = ("source", "checked", "holds_topic")


def believed(topic_holds: Holds, work_dir: Path,
             answered: Callable[[], None] = lambda: None) -> tuple[Holds, bool]:
    """The rows shown (``holds_shown``) from the holds topic's last hold of
    each exposure (``last_holds``) and the ledger of the planner in
    ``work_dir``, and whether there was one (False: the rows are the
    topic's alone). Reads files: off the event loop; ``answered()`` at each
    (KeyedLedger.kept)."""
    own = planner_holds_at(work_dir, answered)
    return holds_shown(topic_holds, own), own is not None


def ledger_reads() -> FileReads:
    """What times a view's read of the planner's ledger; a caller that reads
    again (the console, every few seconds while a page is open) keeps one:
    a read left hung is not made again, one thread on a silent mount."""
    return FileReads(1, LEDGER_SECONDS, of="the planner's ledger")


async def believed_in_time(topic_holds: Holds, work_dir: Path, reads: FileReads | None = None
                           ) -> tuple[Holds, bool, str | None]:
    """``believed``, timed (``reads``; None: this call's own): in anyio's
    threads, untimed, a silent work directory (a hard NFS mount whose
    server is away) held the view for ever -- the console's every page
    waited behind its rebuild, and a `calstream status` or `holds list`
    never ended. Past its time, the topic's rows, unchecked, and why
    (the third item; None when the ledger answered)."""
    reads = reads or ledger_reads()
    try:
        # Hung once no file has answered in its time: a ledger of many holds
        # on slow storage that works is read, not called hung.
        rows, checked = await reads.listing(partial(believed, topic_holds, work_dir),
                                            Path(work_dir), what="planner's ledger's read",
                                            cause=WORK_DIR_HUNG)
    except ReadHung as exc:
        return holds_shown(topic_holds, None), False, (
            f"the planner's ledger in {work_dir} did not answer ({exc}): these are the holds "
            "topic's records, not checked against what the planner holds")
    return rows, checked, None


async def current_holds(cfg, topics) -> tuple[Holds, str | None]:
    """The hold of each exposure as the planner has it, where its ledger is
    reachable (``cfg.work_dir``), else the holds topic's last record; and
    what to say of the rows (None: nothing), as status says it: a ledger
    that did not answer is said so (it was dropped here, and `holds list`
    said there was no planner's ledger in a work directory that has one).
    The topic is folded as it is read: what is kept is its last hold of
    each exposure, as compaction would keep (tansu never compacts)."""
    from calstream.daemon.doers import kafka

    topic_holds: Holds = {}
    name = topics.name("holds")
    await kafka.fold_to_end(cfg, name, lambda batch: last_holds(batch, into=topic_holds))
    rows, checked, unanswered = await believed_in_time(topic_holds, cfg.work_dir)
    if not checked and not rows and not await _listed(cfg, name):
        raise kafka.TopicsMissing({name: HOLDS_NOT_THERE if unanswered is None
                                   else f"{HOLDS_NOT_THERE}; {unanswered}"})
    return rows, unanswered or unchecked_note(rows.values(), cfg.work_dir)


# Why a holds topic the broker does not list, with no planner's ledger to
# read instead, is an error, not "no exposures held": a broker that
# restarted lists no topic until a daemon has created them again (and the
# planner puts its holds back after that); `holds list` said nothing was
# held meanwhile, as for a topic prefix mistyped.
HOLDS_NOT_THERE = ("the broker lists no such topic (yet): a daemon creates it at its start "
                   "and, after a broker restart, the planner puts its holds back: run the "
                   "command again in a moment, give the planner daemon's --work-dir (its "
                   "ledger), or check --topic-prefix")


async def _listed(cfg, name: str) -> bool:
    """Whether the broker lists topic ``name``."""
    from calstream.daemon.doers import kafka

    async with kafka.open_reader(cfg, [name]) as reader:
        return not reader.missing


def by_since(h: dict):
    """A row's place among others, the oldest hold first: its ``since`` as a
    time. As text, a hold stamped with another offset than Z (the contract
    allows any: topics/times.py) sorted by its digits, not its instant:
    ``09:00+05:00`` (04:00 UTC) after ``08:00Z``."""
    return contract.parse_time(h["since"])


def held(rows: Holds) -> list[dict]:
    """The rows of exposures held now, the oldest first."""
    return sorted((h for h in rows.values() if h["state"] == "held"), key=by_since)


def unchecked_note(rows, work_dir: Path) -> str | None:
    """What to say when ``rows`` are the topic's, checked against no ledger."""
    if any(not h["checked"] for h in rows if h["source"] == "holds topic"):
        return (f"no planner's ledger in {work_dir}: these are the holds topic's records, "
                "not checked against what the planner holds (give the planner daemon's "
                "--work-dir)")
    return None


def not_the_planners(h: dict) -> str:
    """A row's mark, to follow it, when the holds topic says what the planner
    did not (empty otherwise). Anyone's text: escape it where it is shown."""
    theirs = h.get("holds_topic")
    if theirs is not None:
        by = (theirs.get("release") or {}).get("by")
        return (f"  [the holds topic says {theirs.get('state')}{' by ' + by if by else ''}: "
                "not the planner's record]")
    if h.get("source") == "holds topic" and h.get("checked"):
        return "  [the holds topic's record: the planner has none of this exposure]"
    return ""
