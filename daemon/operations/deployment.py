"""Where a running daemon is: ``<work_dir>/deployment.json``.

The embedded broker listens on a port chosen at start, and the operations
endpoint may too (``metrics_address = "127.0.0.1:0"``): nobody could know
them afterwards. The daemon records both when it starts (atomically), removes
the record on a clean exit, and every command given the same ``--work-dir``
(or configuration) reads it when no ``--kafka-bootstrap`` is given. A record
left by a crash is recognised as stale (its process is gone, or its endpoint
does not answer) and never used.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import socket
import time
import urllib.request
from pathlib import Path

from calstream.daemon.doers.child_processes import pid_alive
from calstream.daemon.operations.config import Config, ConfigError
from calstream.steps.regular_files import open_new, read_regular_text, set_aside_unless_regular

log = logging.getLogger("calstream.deployment")

RECORD = "deployment.json"
# The records this process wrote (see _own).
_WRITTEN: set[Path] = set()
# Settings a command takes from the record unless it was given them itself.
_SHARED = ("kafka_bootstrap", "metrics_address", "topic_prefix", "group_prefix", "products")


def record_path(work_dir: Path) -> Path:
    return Path(work_dir) / RECORD


def record(cfg: Config, ops_address: str, *, embedded: bool) -> Path:
    """Write the record (a temporary file renamed over it: never half written)."""
    path = record_path(cfg.work_dir)
    previous = read(cfg.work_dir)
    # The start writes the record twice (before its waits, and once the work
    # directory is usable): its own first record is neither another daemon's
    # nor an earlier one's, and is not asked whether it runs (an HTTP request).
    if previous is not None and not _own(path, previous):
        # Once: a silent endpoint costs its time-out. A record of this
        # process's pid it did not write is an earlier daemon's (a container
        # starts its daemon with the same pid each time), however alive it looks.
        why = f"process {previous['pid']} started again" if _this_pid(previous) \
            else stale_reason(previous)
        if why is None:
            log.warning("%s names another running daemon (pid %s): this one replaces the "
                        "record", path, previous["pid"])
        else:
            log.info("replacing %s left by an earlier daemon (%s)", path, why)
    doc = {"pid": os.getpid(), "host": socket.gethostname(),
           "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "kafka_bootstrap": cfg.kafka_bootstrap, "embedded_broker": embedded,
           "metrics_address": ops_address, "topic_prefix": cfg.topic_prefix,
           "group_prefix": cfg.group_prefix, "products": str(cfg.products),
           "roles": list(cfg.roles)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # A directory there made the rename raise and the daemon stop at start.
    set_aside_unless_regular(path, what="deployment record")
    tmp = path.with_name(f".{RECORD}.{os.getpid()}.tmp")
    with open_new(tmp) as f:
        f.write(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, path)
    _WRITTEN.add(path)
    return path


def _this_pid(doc: dict) -> bool:
    return doc.get("pid") == os.getpid() and doc.get("host") == socket.gethostname()


def _own(path: Path, doc: dict) -> bool:
    """This process wrote it (its pid alone does not say so: see record)."""
    return path in _WRITTEN and _this_pid(doc)


def remove(cfg: Config, ops_address: str) -> None:
    """On a clean exit: only our own record (another daemon may have replaced it)."""
    doc = read(cfg.work_dir)
    if doc and doc.get("pid") == os.getpid() and doc.get("metrics_address") == ops_address:
        record_path(cfg.work_dir).unlink(missing_ok=True)


def read(work_dir: Path) -> dict | None:
    try:
        doc = json.loads(read_regular_text(record_path(work_dir)))
    except (OSError, ValueError, RecursionError):  # a file is untrusted: none readable, none
        return None
    # What record() writes: a pid, an address, the shared settings as text;
    # anything else is no record (a missing address or a pid that is no
    # number raised out of every command).
    if not (isinstance(doc, dict) and type(doc.get("pid")) is int
            and isinstance(doc.get("metrics_address"), str)
            and all(isinstance(doc.get(k), str | None) for k in _SHARED)):
        return None
    return doc


def _answers(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=timeout) as r:
            return r.status == 200
    # An address no URL can have (InvalidURL, ValueError: a record is a file),
    # or something there that does not speak HTTP (BadStatusLine): no answer.
    except (OSError, ValueError, OverflowError, http.client.HTTPException):  # a port of 30 digits
        return False


def stale_reason(doc: dict, timeout: float = 3.0) -> str | None:
    """Why the recorded daemon is gone, or None while it runs."""
    if doc.get("host") == socket.gethostname() and not pid_alive(int(doc["pid"])):
        return f"process {doc['pid']} is not running"
    if not _answers(doc["metrics_address"], timeout):
        return f"its operations endpoint {doc['metrics_address']} does not answer"
    return None


def discover(cfg: Config) -> Config:
    """``cfg`` with the recorded deployment's broker and endpoint filled in,
    when no broker was given; unchanged when there is no record. A stale record
    is an error: it names a broker that is gone."""
    if cfg.kafka_bootstrap:
        return cfg
    doc = read(cfg.work_dir)
    if doc is None:
        return cfg
    path = record_path(cfg.work_dir)
    why = stale_reason(doc)
    if why is not None:
        raise ConfigError(f"{path} is stale ({why}; left by a crash?): start the daemon "
                          "again, or give --kafka-bootstrap")
    found = {k: doc[k] for k in _SHARED if doc.get(k) is not None and k not in cfg.sources}
    if "products" in found:
        found["products"] = Path(found["products"])
    discovered = dataclasses.replace(cfg, **found)
    discovered.sources = {**cfg.sources, **{k: f"deployment {path}" for k in found}}
    return discovered
