"""Whether the CRDS references a failed run used are whole, and what that
makes of the failure.

A reference cut short in the local cache (a ``crds sync`` stopped by a full
disk) fails every run that reads it, as a reshape or a bad block: read
alone, the error blames the exposure. Only on a run's *permanent* failure,
the worker checks the references that run used, each by its structure (a
FITS file's headers against its size: steps/fitsfile.py; an ASDF file's tree
and blocks: steps/asdf_layout.py), never by reading its arrays. A broken one
makes the failure the cache's (steps/failures.after_reference_check).

Which references: those the run's log names under the cache's references
directory. stpipe names every reference it resolves there, with its whole
path ("Prefetch for SUPERBIAS reference file is '...'", each step's "Using
... reference file ..."), for every pipeline and stage, and the worker writes
each run's log anyway: a successful run pays nothing, and the answer does
not depend on how a jwst version reaches crds. A path is taken only if it
stays under that directory; the log's other words (the input's name, its
header values) can at most name another cache file to check.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from calstream.steps.admitted_input import stat_sig
from calstream.steps.asdf_layout import asdf_problem
from calstream.steps.failures import PERMANENT, after_reference_check, classify_failure
from calstream.steps.fitsfile import fits_layout
from calstream.steps.regular_files import open_regular_file

log = logging.getLogger("calstream.crds")

# A run's log past this is not read further (stpipe names the references
# before any step runs: at the log's start).
LOG_READ_LIMIT = 64 << 20
LINE_LIMIT = 1 << 20
# References checked at most for one failure (a level-3 run names some tens).
MAX_REFERENCES = 500


def references_root(environ: os._Environ | dict | None = None) -> Path | None:
    """The directory crds keeps reference files in (CRDS_REFPATH, else
    CRDS_PATH/references), or None when CRDS has no local cache here."""
    environ = os.environ if environ is None else environ
    if environ.get("CRDS_REFPATH"):
        return Path(environ["CRDS_REFPATH"])
    if environ.get("CRDS_PATH"):
        return Path(environ["CRDS_PATH"]) / "references"
    return None


def references_in_log(log_path: str | os.PathLike[str], root: Path) -> list[Path]:
    """The files under ``root`` the log at ``log_path`` names, in order, once each."""
    roots = {os.path.abspath(root), os.path.realpath(root)}
    pattern = re.compile("|".join(re.escape(r + os.sep) for r in sorted(roots))
                         + r"""[^\s'"`,;()\[\]{}]+""")
    marks = [os.fsencode(r + os.sep) for r in roots]
    found: dict[Path, None] = {}
    read = 0
    with open_regular_file(log_path) as f:
        # Line by line (a line at most LINE_LIMIT at a time): only the lines
        # naming the directory are decoded.
        for line in iter(lambda: f.readline(LINE_LIMIT), b""):
            read += len(line)
            if read > LOG_READ_LIMIT or len(found) >= MAX_REFERENCES:
                break
            if not any(mark in line for mark in marks):
                continue
            for match in pattern.finditer(line.decode("utf-8", "replace")):
                # "..": out of the directory; a link in it: the cache's own.
                path = os.path.normpath(match.group(0).rstrip(".:"))
                if any(path.startswith(r + os.sep) for r in roots):
                    found.setdefault(Path(path))
    return list(found)[:MAX_REFERENCES]


def reference_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the reference at ``path`` is not whole, or None (whole, or of a
    kind this does not judge). Never raises: a file gone or unreadable is
    itself the problem."""
    try:
        suffix = Path(path).suffix.lower()
        if suffix == ".fits":
            layout = fits_layout(path, allow_unpadded_end=True)
            return None if layout.complete else layout.reason
        if suffix == ".asdf":
            return asdf_problem(path)
        return None
    except FileNotFoundError:
        return "not in the cache any more"
    except OSError as exc:
        return f"unreadable: {exc}"


def broken_references(paths: Iterable[Path]) -> dict[str, str]:
    """{path: why} for the references of ``paths`` that are not whole."""
    return {str(p): why for p in paths if (why := reference_problem(p)) is not None}


def signatures(paths: Iterable[str]) -> dict[str, list[int] | None]:
    """{path: its stat signature (steps/admitted_input.stat_sig), None if gone}."""
    found: dict[str, list[int] | None] = {}
    for path in paths:
        try:
            found[path] = list(stat_sig(os.stat(path)))
        except OSError:
            found[path] = None
    return found


def any_changed(seen: Mapping[str, Sequence[int] | None]) -> bool:
    """Whether a file of ``seen`` ({path: signature}) is not as it was: written,
    replaced, removed or put back. Stats only: a parked run's turn, every
    ``park_recheck_seconds``, costs no pipeline run while the broken file is
    the one it was (a sync that completes it or puts a new file there
    changes it)."""
    now = signatures(seen)
    return any(now[p] != (list(s) if s is not None else None) for p, s in seen.items())


def classify_run_failure(exc: BaseException, task: dict,
                         log_path: str | None = None) -> str | tuple[str, dict]:
    """The worker pool's classifier (doers/worker_process.py): classify_failure,
    and for a permanent failure the check of the references the run's log
    names. A check that cannot be made leaves the failure as it was. A
    failure put on broken references comes with their signatures (the
    runner tries the run again only once one changed: ``any_changed``)."""
    kind = classify_failure(exc, task.get("input_path"))
    root = references_root()
    if kind != PERMANENT or not log_path or root is None:
        return kind
    try:
        broken = broken_references(references_in_log(log_path, root))
    except OSError as why:  # the run's own log unreadable: judged as before
        log.warning("the references of a failed run were not checked: %s", why)
        return kind
    for path, why in broken.items():
        log.warning("CRDS reference %s is not whole (%s): the run's failure (%s: %s) is the "
                    "cache's, not the exposure's; sync it again (crds sync --files %s --repair-files)",
                    path, why, type(exc).__name__, str(exc)[:200], Path(path).name)
    kind = after_reference_check(kind, broken)
    return (kind, signatures(broken)) if broken else kind
