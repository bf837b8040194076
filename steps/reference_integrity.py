"""Whether the CRDS references a failed run used are whole, and what that
makes of the failure.

A reference cut short in the local cache (a ``crds sync`` stopped by a full
disk) fails every run that reads it, as a reshape or a bad block: read
alone, the error blames the exposure. Only on a run's *permanent* failure,
the worker checks the references that run used, each by its structure (a
FITS file's headers against its size: steps/fitsfile.py; an ASDF file's tree
and blocks: steps/asdf_layout.py), never by reading its arrays. A broken one
makes the failure the cache's (steps/failures.after_reference_check).

Which references: those the failing steps themselves asked for, as stpipe
records them. Every step obtains its references through
``Step.get_reference_file``, which notes each (reference type, ``crds://name``
or override path) in the step's ``_reference_files_used`` until the step
finishes (jwst then writes them into the product's ``meta.ref_file``). The
steps on the failure's stack (the exception's traceback: the pipeline, the
step that failed, a step it ran) still hold theirs; a reference a skipped or
later step would have read, or one crds answers N/A for the mode, is not
among them. Also the file an OSError of the failure names (stpipe's prefetch
opens every reference it lists: an unreadable one fails there). Not the
run's log: stpipe's prefetch names every reference of every step that may
run, and its wording is stpipe's to change. A path is taken only if it stays
under the cache's references directory (an override elsewhere is the
operator's file, not the cache's).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from calstream.steps.admitted_input import stat_sig
from calstream.steps.asdf_layout import asdf_problem
from calstream.steps.failures import PERMANENT, after_reference_check, causes, classify_failure
from calstream.steps.fitsfile import fits_layout
from calstream.steps.mount_health import after_io_error

log = logging.getLogger("calstream.crds")

# References checked at most for one failure (a step reads some; a level-3
# run's nested steps some tens).
MAX_REFERENCES = 500
CRDS_URI = "crds://"


def references_root(environ: os._Environ | dict | None = None) -> Path | None:
    """The directory crds keeps reference files in (CRDS_REFPATH, else
    CRDS_PATH/references), or None when CRDS has no local cache here."""
    environ = os.environ if environ is None else environ
    if environ.get("CRDS_REFPATH"):
        return Path(environ["CRDS_REFPATH"])
    if environ.get("CRDS_PATH"):
        return Path(environ["CRDS_PATH"]) / "references"
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    return [exc, *causes(exc)]


def failing_steps(exc: BaseException) -> list:
    """The stpipe steps on the failure's stack, outermost first, once each:
    the ``self`` of every frame the exception went through."""
    from stpipe import Step

    found: dict[int, object] = {}
    for raised in _chain(exc):
        tb = raised.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if isinstance(owner, Step):
                found.setdefault(id(owner), owner)
            tb = tb.tb_next
    return list(found.values())


def crds_cache_path(name: str) -> str:
    """A ``crds://`` reference's path in the local cache, as crds places it."""
    from stpipe.crds_client import reference_uri_to_cache_path

    return reference_uri_to_cache_path(name, "jwst")


def references_of_failure(exc: BaseException, root: Path,
                          locate: Callable[[str], str] = crds_cache_path) -> list[Path]:
    """The files under ``root`` the failing steps asked for (their
    ``_reference_files_used``: ``crds://`` names found with ``locate``,
    override paths as they are; ``N/A`` is no file), and the files the
    failure's OSErrors name: in order, once each."""
    named: list[str] = []
    for step in failing_steps(exc):
        for _reftype, name in getattr(step, "_reference_files_used", None) or ():
            if not isinstance(name, str) or name.strip() in ("", "N/A"):
                continue  # none for the mode, or an override given as a model
            named.append(locate(name) if name.startswith(CRDS_URI) else name)
    for raised in _chain(exc):
        if isinstance(raised, OSError):
            named += [os.fsdecode(f) for f in (raised.filename, raised.filename2)
                      if isinstance(f, str | bytes | os.PathLike) and f]  # not a descriptor
    return under(named, root)[:MAX_REFERENCES]


def under(paths: Iterable[str], root: Path) -> list[Path]:
    """``paths`` that lie under ``root``, normalised, once each: '..' taken
    out; a link in the directory counts as the cache's own."""
    roots = {os.path.abspath(root), os.path.realpath(root)}
    found: dict[Path, None] = {}
    for path in paths:
        path = os.path.normpath(os.path.abspath(path))
        if any(path.startswith(r + os.sep) for r in roots):
            found.setdefault(Path(path))
    return list(found)


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
    for a transient one with an I/O error behind it a second look at the
    mounts the run used (steps/mount_health.py), and for a permanent failure the check of the references its failing
    steps asked for (``references_of_failure``; ``log_path`` is not read).
    A check that cannot be made leaves the failure as it was. A failure put
    on broken references comes with their signatures (the runner tries the
    run again only once one changed: ``any_changed``)."""
    # An I/O error: the mount's fault if a second look at it fails too.
    root = references_root()
    kind = after_io_error(classify_failure(exc, task.get("input_path")), exc, task,
                          also=[root] if root is not None else [])
    if kind != PERMANENT or root is None:
        return kind
    try:
        broken = broken_references(references_of_failure(exc, root))
    except Exception as why:  # noqa: BLE001 - crds could not place a name: judged as before
        log.warning("the references of a failed run were not checked: %s", why)
        return kind
    for path, why in broken.items():
        log.warning("CRDS reference %s is not whole (%s): the run's failure (%s: %s) is the "
                    "cache's, not the exposure's; sync it again (crds sync --files %s --repair-files)",
                    path, why, type(exc).__name__, str(exc)[:200], Path(path).name)
    kind = after_reference_check(kind, broken)
    return (kind, signatures(broken)) if broken else kind
