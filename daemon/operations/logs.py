"""Structured logs: every line about an exposure carries its id, the stage and
the work item.

Code logs with ``extra={"exposure_id": ..., "stage": ...}``; these formatters
put them on the line (text) or in fields (JSON, with --json-logs). The
calibration workers are separate processes: ``worker_env`` hands them the
daemon's format, ``task_env`` the running task's exposure, stage and work id,
and ``worker_setup`` puts both on every line a worker writes, the pipelines'
own included.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

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

    def __init__(self) -> None:
        super().__init__(_TEXT, "%H:%M:%S")

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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return handler
