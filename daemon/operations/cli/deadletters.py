"""``calstream deadletters list|show|redrive``: dead letters for operators.

A dead letter carries the record that failed (``original``: topic, partition,
offset, key, value). Redriving re-publishes that record, unchanged, to its
topic once the cause is fixed, so it runs again exactly as the first time: an
arrival goes back to ``raw`` (the watcher's ledger of announced files plays no
part, the arrival itself is re-sent), a work order back to its work topic.
Nothing else has to be reset: the runners' "already done" check is the
product store's record, which a failed run never wrote. Who asked and why go
with the record, in its ``calstream-redrive`` header (JSON: by, reason, the
dead letter's event id and place), so the topic itself keeps the audit trail,
and ``list`` shows which dead letters were redriven. What a letter carries
is sent only if the record at the place it names is that original
(``redrive_sending.unproven``): a letter is anyone's to write, and the redrive
writes with the operator's rights to topics only the planner or the stages
write.

A dead letter is named on the command line by its place on the deadletter
topic, ``PARTITION:OFFSET`` (what ``list`` prints), or a prefix of its event id.
A dead letter's event id is deterministic, and one emitted again (a planner
that restarts decides again what its snapshot does not cover, and refuses
the same record again) is one dead letter: its latest record, which the
places of the earlier ones name too (dead_letter_reading.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

import anyio

from calstream.daemon.deciders.command_times import NotATime, parse_when
from calstream.daemon.operations.cli.dead_letter_reading import (
    DeadLetter,
    Loaded,
    cut_note,
    letter_json,
    load,
    named,
    named_letters,
)
from calstream.daemon.operations.cli.redrive_sending import redrive, subject
from calstream.daemon.operations.cli.redrive_sending import unproven as unproven_letters
from calstream.daemon.operations.cli.registry import (
    DAEMON_FLAGS,
    broker_config,
    command,
    group,
    operator,
    reason_argument,
)
from calstream.daemon.operations.dead_letter_redrives import redrivable_topics
from calstream.daemon.operations.logs import escape_controls
from calstream.daemon.operations.status_render import LINE_CHARS
from calstream.topics import contract
from calstream.topics.catalog import Topics
from calstream.topics.dead_letters import bounded, original_bytes

group("deadletters", "what could not be processed; redrive it once the cause is fixed")

def _when_argument(text: str) -> str:
    """--since/--until checked when the command line is read, before the
    broker is: a value that is no time is a usage error, not a traceback."""
    try:
        parse_when(text)
    except NotATime as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _ref_argument(text: str) -> str:
    """A REF that names something: an empty one (an unset "$REF" in a
    script) was the prefix of every event id, and redrove them all."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty REF names no dead letter: give "
                                         "PARTITION:OFFSET or an event id prefix")
    return text


def selected(letters: list[DeadLetter], args: argparse.Namespace) -> list[DeadLetter]:
    """The dead letters the filters and references of ``args`` pick."""
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    out = []
    for letter in letters:
        b = letter.body
        when = contract.parse_time(b["emitted_at"])
        if args.refs and not any(named(letter, r) for r in args.refs):
            continue
        if args.category and b["category"] not in args.category:
            continue
        if args.reason_contains and args.reason_contains.lower() not in b["reason"].lower():
            continue
        if args.stage and b["stage"] not in args.stage:
            continue
        if args.exposure and args.exposure not in (b.get("exposure_id") or ""):
            continue
        if (since and when < since) or (until and when > until):
            continue
        if getattr(args, "pending", False) and letter.redrives:
            continue
        out.append(letter)
    return out


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("refs", nargs="*", metavar="REF", type=_ref_argument,
                   help="PARTITION:OFFSET on the deadletter topic, or an event id prefix")
    # The schema's categories: a misspelt one would match nothing, silently.
    categories = contract.schema("dead_letter")["properties"]["category"]["enum"]
    p.add_argument("--category", action="append", choices=categories, metavar="CATEGORY",
                   help=f"{', '.join(categories)} (repeatable)")
    p.add_argument("--reason-contains", dest="reason_contains",
                   help="the dead letter's reason contains this text (case-insensitive)")
    p.add_argument("--stage", action="append", help="watcher, detector1, stage2, ... (repeatable)")
    p.add_argument("--exposure", help="exposure id contains this text")
    p.add_argument("--since", type=_when_argument,
                   help="dead-lettered at or after: ISO time or an age (30m, 2h, 1d)")
    p.add_argument("--until", type=_when_argument,
                   help="dead-lettered at or before: ISO time or an age")


def _list_arguments(p: argparse.ArgumentParser) -> None:
    _selection_arguments(p)
    p.add_argument("--pending", action="store_true", help="only those not redriven yet")
    p.add_argument("--limit", type=_count_argument, default=LIST_LIMIT,
                   help=f"the newest N that match (default {LIST_LIMIT}; 0: all, which reads "
                        "the whole topic)")
    p.add_argument("--json", action="store_true")


LIST_LIMIT = 50  # what a terminal shows; the topic may keep a million


def _count_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (0, 1, 2, ...)")
    return value


def _filtered(args: argparse.Namespace):
    """Whether a letter passes the filters of ``args`` other than --pending
    (known only once its redrives are read)."""
    plain = argparse.Namespace(**{**vars(args), "pending": False})
    return lambda letter: bool(selected([letter], plain))


async def _read(cfg, args: argparse.Namespace, limit: int | None) -> Loaded:
    """The letters the selection of ``args`` picks: those named by REF (each
    read where it is), else the newest that pass the filters, back to --since."""
    topics = Topics(cfg.topic_prefix)
    if args.refs:
        letters, problems = await named_letters(cfg, topics, args.refs)
        return Loaded(selected(letters, args), problems=problems)
    return await load(cfg, topics, keep=_filtered(args), limit=limit,
                      since=parse_when(args.since) if args.since else None,
                      pending=getattr(args, "pending", False))


@command("deadletters list", "dead letters, filtered by category, reason, stage, exposure, time",
         flags=DAEMON_FLAGS, arguments=_list_arguments)
def cmd_list(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "deadletters")
    loaded = anyio.run(_read, cfg, args, args.limit or None)
    for problem in loaded.problems:
        print(f"calstream: {problem}", file=sys.stderr)
    # Read newest first; shown oldest first, as before: the newest next to the prompt.
    rows = list(reversed(loaded.letters))
    note = cut_note(loaded, args.limit)
    if args.json:
        print(json.dumps([letter_json(r) for r in rows], indent=1))
        if note:
            print(f"calstream: {note}", file=sys.stderr)  # stdout stays one JSON document
        return 0
    if not rows:
        print("no dead letters" + (" match" if loaded.records_read else ""))
    else:
        print(f"{'ref':9} {'when':20} {'stage':10} {'category':18} "
              f"{'exposure / key / file':34} {'redriven':8} reason")
        for r in rows:
            print(list_row(r))
    if note:
        print(f"({note})")
    return 0


def _utc(when: str) -> str:
    """A letter's time in UTC to the second, as its column says: its first
    19 characters were shown, the hours of whatever offset it was written in."""
    return contract.parse_time(when).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def list_row(r: DeadLetter) -> str:
    """One dead letter, one line, escaped: a dead letter is read from a topic
    anyone may write, and a reason quotes text from outside (a pipeline's
    error, a name); no control sequence reaches the terminal."""
    b = r.body
    who = subject(b)
    # Bounded as a status line: its stage is free text, up to a megabyte.
    return escape_controls(bounded(f"{r.ref:9} {_utc(b['emitted_at']):20} {b['stage']:10} "
                                   f"{b['category']:18} {who[:34]:34} "
                                   f"{len(r.redrives) or '':8} {b['reason'][:100]}", LINE_CHARS))


def _show_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", type=_ref_argument,
                   help="PARTITION:OFFSET (from list) or an event id prefix")


@command("deadletters show", "one dead letter whole, with its original record and redrives",
         flags=DAEMON_FLAGS, arguments=_show_arguments)
def cmd_show(args: argparse.Namespace) -> int:
    cfg = broker_config(args, "deadletters")
    letters, problems = anyio.run(named_letters, cfg, Topics(cfg.topic_prefix), [args.ref])
    if problems:  # an error: on stderr, as every command's (stdout is the result's)
        print(f"calstream: {problems[0]}", file=sys.stderr)
        return 1
    [letter] = letters
    print(json.dumps(letter_json(letter, copies=False), indent=1))
    _, problem = original_bytes(letter.body.get("original"),
                                 redrivable_topics(Topics(cfg.topic_prefix)))
    if problem is None:  # what the redrive itself checks before it sends
        problem = anyio.run(unproven_letters, cfg, [letter]).get(letter.ref)
    print(f"redrive: {'not possible: ' + problem if problem else 'possible'}")
    return 0


def _redrive_arguments(p: argparse.ArgumentParser) -> None:
    _selection_arguments(p)
    p.add_argument("--reason", dest="why", required=True, type=reason_argument,
                   help="why (recorded in the redriven record's calstream-redrive header)")
    p.add_argument("--all", action="store_true", help="every dead letter (no selection given)")
    p.add_argument("--again", action="store_true", help="also those already redriven")
    p.add_argument("--unverified", action="store_true",
                   help="send what each dead letter carries without comparing it with the "
                        "record at the place it names (one gone by retention, or with a broker "
                        "that lost it): only for letters you know to be calstream's")
    p.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")


@command("deadletters redrive",
         "re-publish the original records of a selection, after their cause is fixed",
         flags=(*DAEMON_FLAGS, "--by"), arguments=_redrive_arguments)
def cmd_redrive(args: argparse.Namespace) -> int:
    if not (args.refs or args.category or args.reason_contains or args.stage or args.exposure
            or args.since or args.until or args.all):
        print("calstream: say which dead letters to redrive (REF, --category, --reason-contains, "
              "--stage, --exposure, --since, --until), or --all", file=sys.stderr)
        return 2
    cfg = broker_config(args, "deadletters")
    # A selection without REF reads the whole topic back to --since, and
    # holds only the letters it picks.
    loaded = anyio.run(_read, cfg, args, None)
    if problems := loaded.problems:
        # Nothing is sent: a mistyped REF among others said "redriven N" and
        # exit 0, as if the one meant had gone too; a short prefix took many.
        for problem in problems:
            print(f"calstream: {problem}", file=sys.stderr)
        print("calstream: nothing redriven (a selection of many is made with --category, "
              "--stage, --exposure, --since, ...)", file=sys.stderr)
        return 1
    chosen, refused = [], []
    for letter in reversed(loaded.letters):  # oldest first, as they failed
        if letter.redrives and not args.again:
            print(f"{letter.ref}: already redriven ({len(letter.redrives)} time(s)); "
                  "--again sends it again")
            continue
        _, problem = original_bytes(letter.body.get("original"),
                                    redrivable_topics(Topics(cfg.topic_prefix)))
        (refused if problem else chosen).append((letter, problem))
    if chosen and not args.unverified:
        # A letter is anyone's: what it carries goes out only as a record its
        # topic held (deciders/redrive_reading.unproven_original).
        unproven = anyio.run(unproven_letters, cfg, [letter for letter, _ in chosen])
        refused += [(letter, f"{unproven[letter.ref]}; --unverified sends it all the same")
                    for letter, _ in chosen if letter.ref in unproven]
        chosen = [(letter, p) for letter, p in chosen if letter.ref not in unproven]
    for letter, problem in refused:
        print(f"{letter.ref}: cannot be redriven: {problem}")
    if args.dry_run:
        for letter, _ in chosen:
            print(f"{letter.ref}: would re-publish to {letter.body['original']['topic']}")
        # As the redrive itself would end: a dry run of a selection every
        # letter of which is refused said exit 0, and a script that checks
        # first went on to a redrive that sends nothing and fails.
        if refused and not chosen:
            print(f"calstream: none of the {len(refused)} dead letter(s) selected could be "
                  "redriven (each said above)", file=sys.stderr)
            return 1
        return 0
    by = operator(args)
    refused_by_broker: list[str] = []  # each said as it was refused
    sent = anyio.run(redrive, cfg, [letter for letter, _ in chosen], by, args.why,
                     refused_by_broker)
    not_sent = len(refused) + len(refused_by_broker)
    print(f"redriven {len(sent)} dead letter(s) (by {by}: {args.why})"
          + (f"; {not_sent} could not be" if not_sent else ""))
    return 1 if not_sent and not sent else 0
