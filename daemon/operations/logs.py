"""Structured logs: every line about an exposure carries its id and the stage.

Code logs with ``extra={"exposure_id": ..., "stage": ...}``; these formatters
put both on the line (text) or in fields (JSON, with --json-logs).
"""

from __future__ import annotations

import json
import logging
import sys
import time

_FIELDS = ("exposure_id", "stage")


class _Defaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for f in _FIELDS:
            if not hasattr(record, f) or getattr(record, f) is None:
                setattr(record, f, "-")
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for f in _FIELDS:
            value = getattr(record, f, "-")
            if value != "-":
                doc[f] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


# Names in log lines come from outside (file names, message fields): a newline
# or an escape sequence in one must not forge a line or repaint a terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL[ord("\n")] = "\\n"
_CONTROL[ord("\t")] = "\\t"


def escape_controls(text: str) -> str:
    return text.translate(_CONTROL)


class TextFormatter(logging.Formatter):
    """One record, one line: control characters escaped; a traceback's lines
    are prefixed so that none of them can pass for a record of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(stage)s %(exposure_id)s] "
                         "%(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        safe = logging.makeLogRecord(record.__dict__)
        safe.message = escape_controls(record.message)
        for f in _FIELDS:
            setattr(safe, f, escape_controls(str(getattr(record, f, "-"))))
        return super().formatMessage(safe)

    def formatException(self, ei) -> str:  # noqa: N802
        return "\n".join("  | " + escape_controls(line)
                         for line in super().formatException(ei).splitlines())


def setup(level: str = "INFO", json_logs: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Defaults())
    if json_logs:
        fmt = JsonFormatter()
        fmt.converter = time.gmtime
    else:
        fmt = TextFormatter()
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiokafka logs every rebalance and connection at INFO: noise for operators.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
