"""Structured logs: every line about an exposure carries its id, the stage and
the work item.

Code logs with ``extra={"exposure_id": ..., "stage": ...}``; these formatters
put them on the line (text) or in fields (JSON, with --json-logs). The
calibration workers are separate processes: ``worker_env`` hands them the
daemon's format, ``task_env`` the running task's exposure, stage and work id,
and ``worker_setup`` puts both on every line a worker writes, the pipelines'
own included. Both have flood control (``FloodControl``): a warning repeated
past its budget is counted, then summarised in one line.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import sys
import threading
import time

from calstream.daemon.deciders.log_floods import FloodWindows
from calstream.topics.dead_letters import bounded

_FIELDS = ("exposure_id", "stage", "work_id")
# Set in a worker's environment by the daemon (worker_env) and per task (task_env).
WORKER_JSON_ENV = "CALSTREAM_WORKER_JSON_LOGS"
WORKER_LEVEL_ENV = "CALSTREAM_WORKER_LOG_LEVEL"
TASK_CONTEXT_ENV = "CALSTREAM_TASK_LOG_CONTEXT"
# What one record may put on a line (characters, before escapes): the
# message, each of the fields, a traceback. A forged 1 MB key or reason was a
# 1 MB line; cut, a line says how much it lost ("... [N more characters]").
MESSAGE_BUDGET = 4000
FIELD_BUDGET = 200
TRACEBACK_BUDGET = 16000
_TEXT = "%(asctime)s %(levelname)-7s %(name)s [%(stage)s %(exposure_id)s %(short_work_id)s] " \
        "%(message)s"


class _Defaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for f in _FIELDS:
            if not hasattr(record, f) or getattr(record, f) is None:
                setattr(record, f, "-")
        record.short_work_id = record.work_id[:12]
        return True


class _TaskContext(logging.Filter):
    """In a worker: the running task's fields on every record that lacks them."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = os.environ.get(TASK_CONTEXT_ENV)
        if context:
            for key, value in json.loads(context).items():
                if getattr(record, key, None) in (None, "-"):
                    setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name,
               "message": bounded(record.getMessage(), MESSAGE_BUDGET), "pid": record.process}
        for f in _FIELDS:
            value = getattr(record, f, "-")
            if value != "-":
                doc[f] = bounded(str(value), FIELD_BUDGET)
        if record.exc_info:
            doc["exception"] = bounded(self.formatException(record.exc_info), TRACEBACK_BUDGET)
        if getattr(record, "flood_summary", False):  # for a log query to sum
            doc["suppressed"] = record.suppressed
        return json.dumps(doc)


# Names in log lines come from outside (file names, message fields): a newline
# or an escape sequence in one must not forge a line or repaint a terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL[ord("\n")] = "\\n"
_CONTROL[ord("\t")] = "\\t"
# A file name that is not UTF-8 comes as surrogates (U+DC80..U+DCFF, one per
# byte): shown as the byte, so the line can be written, as UTF-8, anywhere.
_CONTROL.update({c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)})
_CONTROL.update({c: f"\\u{c:04x}" for c in (*range(0xD800, 0xDC80), *range(0xDD00, 0xE000))})
# Bidirectional controls ("Trojan Source": U+202E shows what follows right to
# left, so a record's text could show an exposure id or a reason other than
# it is, on a page, a terminal or in a log viewer) and the line and paragraph
# separators some viewers break lines at: shown as escapes too.
_CONTROL.update({c: f"\\u{c:04x}" for c in (0x061C, 0x200E, 0x200F, 0x2028, 0x2029,
                                           *range(0x202A, 0x202F), *range(0x2066, 0x206A))})


# For HTML, where a line break or tab is white space like any other.
_CONTROL_BUT_SPACE = {c: e for c, e in _CONTROL.items() if c not in (ord("\n"), ord("\t"))}


def escape_controls(text: str, *, keep_breaks: bool = False) -> str:
    """``text`` with its control characters and lone surrogates shown as
    escapes; ``keep_breaks``: line breaks and tabs kept as they are."""
    return text.translate(_CONTROL_BUT_SPACE if keep_breaks else _CONTROL)


class TextFormatter(logging.Formatter):
    """One record, one line: control characters escaped, lengths bounded; a
    traceback's lines are prefixed so that none of them can pass for a record
    of its own."""

    def __init__(self, fmt: str = _TEXT, datefmt: str | None = "%H:%M:%S") -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        # The record's values with the outside ones escaped, in a copy of its
        # dict: the record itself goes on to other handlers as it was (a new
        # LogRecord for the copy cost as much as the rest of the line).
        values = dict(record.__dict__)
        values["message"] = escape_controls(bounded(record.message, MESSAGE_BUDGET))
        for f in (*_FIELDS, "short_work_id"):
            values[f] = escape_controls(bounded(str(getattr(record, f, "-")), FIELD_BUDGET))
        return self._fmt % values

    def formatException(self, ei) -> str:  # noqa: N802
        text = bounded(super().formatException(ei), TRACEBACK_BUDGET)
        return "\n".join("  | " + escape_controls(line) for line in text.splitlines())


# The record attribute (``extra={"fault": ...}``) that says what a line is
# about: "data" (a record's or file's fault: flood-controlled at any level) or
# "infrastructure" (broker, disk, CRDS: never left out; their lines are bounded
# by the work in flight, not by what a producer sends).
FAULT = "fault"
_flush_at_exit = threading.Event()  # registered once per process


def _flood_kind(record: logging.LogRecord) -> tuple | None:
    """The kind a record's flood budget is counted by (its call site, stage
    and category), or None when it is never left out: errors and infos
    unless marked data faults, anything marked an infrastructure fault."""
    fault = getattr(record, FAULT, None)
    if fault == "infrastructure" or (
            fault != "data" and not logging.WARNING <= record.levelno < logging.ERROR):
        return None
    return (record.name, record.pathname, record.lineno, record.levelno,
            str(getattr(record, "stage", "-")), str(getattr(record, "category", "-")))


class _LeftOut:
    """What a summary shows of the last line of a kind left out. Not the
    record: it held its traceback (every frame's locals, a pipeline's models
    in a worker) and its arguments (a forged 1 MB key) until the summary, a
    minute, for each of up to 1,000 kinds."""

    __slots__ = ("name", "levelno", "levelname", "pathname", "lineno", "stage", "message")

    def __init__(self, record: logging.LogRecord) -> None:
        self.name, self.levelno, self.levelname = record.name, record.levelno, record.levelname
        self.pathname, self.lineno = record.pathname, record.lineno
        self.stage = getattr(record, "stage", None)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - its own arguments did not fit its text
            # A filter that raises breaks the line's caller: never here.
            message = repr(record.msg)[:MESSAGE_BUDGET] if type(record.msg) is str \
                else f"(a message of type {type(record.msg).__name__})"
        self.message = bounded(message, MESSAGE_BUDGET)


class FloodControl(logging.Filter):
    """A handler's last filter: the lines of one kind past their budget in a
    window are left out, then summarised in one line of the same logger and
    level (deciders/log_floods.py decides; ``clock`` is injected by tests)."""

    def __init__(self, handler: logging.Handler, windows: FloodWindows | None = None,
                 clock=time.monotonic) -> None:
        super().__init__()
        self.handler, self.windows, self.clock = handler, windows or FloodWindows(), clock
        self._lock = threading.Lock()  # lines come from threads too (to_thread)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "flood_summary", False):
            return True
        kind = _flood_kind(record)
        now = self.clock()
        if kind is None and now < self.windows.due:  # most lines: no lock, no summary due
            return True
        with self._lock:
            summaries = self.windows.ended(now)
            admitted = kind is None or self.windows.admit(kind, now, _LeftOut(record))
        self._write(summaries)  # before this line: the log stays in order
        return admitted

    def flush(self, *, all_of_them: bool = False, blocking: bool = True) -> None:
        """The summaries of windows that ended (all, at the end of a process);
        not ``blocking``: none if a line holds the lock (a signal handler's
        flush, on the thread that may hold it)."""
        if not self._lock.acquire(blocking=blocking):
            return
        try:
            summaries = self.windows.ended(self.clock(), all_of_them=all_of_them)
        finally:
            self._lock.release()
        self._write(summaries)

    def _write(self, summaries) -> None:
        for s in summaries:
            last: _LeftOut = s.last
            example = last.message
            what = {logging.WARNING: "warning"}.get(last.levelno, last.levelname.lower())
            line = logging.LogRecord(
                last.name, last.levelno, last.pathname, last.lineno,
                "suppressed %d similar %s(s) in the last %.0f s; the last: %s",
                (s.suppressed, what, s.seconds, example), None)
            line.flood_summary, line.suppressed = True, s.suppressed
            line.stage = last.stage
            self.handler.handle(line)


def flush_floods(*, all_of_them: bool = False, blocking: bool = True) -> None:
    """Write the summaries due (the daemon's heartbeat, a worker after each
    task): without it, the summary of a flood that stopped would wait for
    the next line."""
    for flood in flood_controls():
        flood.flush(all_of_them=all_of_them, blocking=blocking)


def floods_due_in() -> float:
    """Seconds until the first summary owed is due (inf: none is owed): how
    long a process with no heartbeat (a worker between tasks) may wait
    before ``flush_floods``."""
    return min((f.windows.due - f.clock() for f in flood_controls()), default=math.inf)


def flood_controls() -> list[FloodControl]:
    """Those of the root logger's handlers now (not of handlers it had: a
    summary must not go to a stream closed since)."""
    return [f for h in logging.getLogger().handlers for f in h.filters
            if isinstance(f, FloodControl)]


def _flood_controlled(handler: logging.Handler) -> logging.Handler:
    if not _flush_at_exit.is_set():  # the last summaries at the process's end
        _flush_at_exit.set()
        atexit.register(flush_floods, all_of_them=True)
    handler.addFilter(FloodControl(handler))
    return handler


def _handler(json_logs: bool) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        fmt: logging.Formatter = JsonFormatter()
        fmt.converter = time.gmtime
    else:
        fmt = TextFormatter()
    handler.setFormatter(fmt)
    return handler


def setup(level: str = "INFO", json_logs: bool = False) -> None:
    handler = _handler(json_logs)
    handler.addFilter(_Defaults())
    _flood_controlled(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance and connection at INFO: noise for operators.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


def worker_env(json_logs: bool) -> dict[str, str]:
    """What a worker process needs to write the daemon's format."""
    return {WORKER_JSON_ENV: "1" if json_logs else "0"}


def task_env(*, exposure_id: str | None, stage: str | None, work_id: str | None) -> dict:
    """A task's fields, for the worker's lines while it runs (see _TaskContext)."""
    fields = {"exposure_id": exposure_id, "stage": stage, "work_id": work_id}
    return {TASK_CONTEXT_ENV: json.dumps({k: v for k, v in fields.items() if v})}


def worker_setup() -> logging.Handler:
    """A worker's stderr (the daemon's log): warnings and up by default, in the
    daemon's format, each line with the running task's exposure, stage and work id."""
    handler = _handler(os.environ.get(WORKER_JSON_ENV) == "1")
    handler.setLevel(os.environ.get(WORKER_LEVEL_ENV, "WARNING"))
    handler.addFilter(_TaskContext())
    handler.addFilter(_Defaults())
    _flood_controlled(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler
