"""What a pipeline failure means for the exposure: skip it, retry it, or give up.

A pure function of the exception, so the daemon can decide without jwst,
stpipe or crds imported (classes are recognised by name along their MRO).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

SKIPPED = "skipped"
TRANSIENT = "transient"
PERMANENT = "permanent"
# The environment the daemon depends on is broken (a full or read-only product
# store, CRDS out of reach or its cache incomplete): every item would fail the
# same way until an operator or time fixes it, and then every item succeeds.
# Reported as "infrastructure:<cause>"; the runner parks such items instead of
# dead-lettering them (deciders/retry_policy.py).
INFRASTRUCTURE = "infrastructure"
DISK_FULL = "disk_full"
READ_ONLY = "read_only"
CRDS_UNREACHABLE = "crds_unreachable"
CRDS_REFERENCE_MISSING = "crds_reference_missing"
CRDS_LOOKUP = "crds_lookup"
# A reference the run used is in the cache but not whole (a sync cut short by a
# full disk): see after_reference_check.
CRDS_REFERENCE_CORRUPT = "crds_reference_corrupt"
# A network mount that no longer serves its files at all (a stale handle, a
# FUSE or NFS transport gone): it clears when the mount is restored, never
# by changing the input; retried a few times, an outage of minutes turned
# every exposure it touched into a retries_exhausted dead letter.
MOUNT_GONE = "mount_gone"

# stpipe's exit status for "no science data" (e.g. NoDataOnDetectorError):
# `strun` exits with it, and it is an expected result, not an error.
NO_SCIENCE_DATA = 64

# OSErrors that retrying cannot fix: the path or the permissions are wrong,
# and stay wrong until someone changes the configuration.
_PERMANENT_OS_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError)
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EISDIR}

# A store that cannot take a byte more, or none at all: it clears when space
# is freed or the file system remounted, never by changing the input.
_STORE_ERRNOS = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: DISK_FULL, errno.EROFS: READ_ONLY}

# The mount's own faults, whichever side of the run they hit (its input in
# the inbox, its products, a reference): named by the log line, not by a
# directory label. EIO is not among them: a damaged file reads so too.
_MOUNT_ERRNOS = {errno.ESTALE: MOUNT_GONE, errno.ENOTCONN: MOUNT_GONE,
                 errno.ENOLINK: MOUNT_GONE}

# The same faults reported without an errno: asdf (writing jwst's products)
# raises a bare OSError("Not enough space on disk: requested ..., available 0").
_STORE_TEXTS = {"no space left on device": DISK_FULL, "not enough space on disk": DISK_FULL,
                "disk quota exceeded": DISK_FULL, "read-only file system": READ_ONLY}

# crds errors that are about reaching the server or the cache, not about the rules
# (CrdsCacheUnreachable: crds_env's name for crds's own exit when it reaches neither).
_UNREACHABLE_CRDS = {"CrdsNetworkError", "CrdsDownloadError", "ServiceError",
                     "CrdsCacheUnreachable"}

# Process-level interruptions: the job did not fail on its merits.
_INTERRUPTIONS = {"KeyboardInterrupt", "SystemExit", "CancelledError", "BrokenProcessPool"}


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _same_file(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    if a is None or b is None:
        return False
    return os.path.abspath(os.fspath(a)) == os.path.abspath(os.fspath(b))


def error_text(exc: BaseException, limit: int | None = None) -> str:
    """``exc`` in one line for an operator: its type, then its words (the
    first ``limit`` characters of them: a message may quote a whole record).
    Some libraries put the type in the words already (aiokafka's
    KafkaError): status printed `KafkaConnectionError: KafkaConnectionError:
    Unable to bootstrap ...`; it is said once."""
    name = type(exc).__name__
    return f"{name}: {error_words(exc).removeprefix(f'{name}: ')[:limit]}"


STORE_CAUSES = frozenset(_STORE_ERRNOS.values())  # a disk that refuses: which one matters


def with_place(text: str, where: str | os.PathLike | None) -> str:
    """An error's ``text`` naming ``where`` (the directory being written) when
    it names no path itself. ENOSPC from a write or an fsync carries no file
    name ("[Errno 28] No space left on device"), nor does asdf's "Not enough
    space on disk": a parked line of those named nothing to free."""
    if where is None or os.sep in text:
        return text
    return f"{text} (writing under {os.fspath(where)})"


def _crds_fatal(exc: BaseException) -> bool:
    """``exc`` is crds's "(FATAL) CRDS server connection and cache load
    FAILED": crds ends the process (sys.exit(-1), crds.core.log.fatal_error)
    when it can load its configuration neither from its server nor from the
    cache (not mounted, emptied, half-synced). Raised in a worker's run, it is
    a SystemExit the worker catches: told from a shutdown by where it was
    raised."""
    frame = _raised_in(exc) if isinstance(exc, SystemExit) else None
    module = frame.f_globals.get("__name__", "") if frame is not None else ""
    return module == "crds" or module.startswith("crds.")


def _raised_in(exc: BaseException):
    """The frame ``exc`` was raised in (its traceback's last), or None."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame if tb is not None else None


def error_words(exc: BaseException) -> str:
    """``str(exc)``, but for crds's fatal exit what crds said (its FATAL
    line, as its log writes it: the words joined by spaces), not the exit
    status: a parked line read `SystemExit: -1`."""
    if _crds_fatal(exc):
        said = _raised_in(exc).f_locals.get("args")  # fatal_error(*args)
        if isinstance(said, tuple) and said:
            return " ".join(["(FATAL)", *(str(a) for a in said)])
    return str(exc)


def infrastructure_cause(exc: BaseException) -> str | None:
    """The broken piece of infrastructure behind ``exc``, or None.

    A full (ENOSPC, EDQUOT) or read-only (EROFS) file system; crds failing to
    reach its server or download a file (serverless mode reports a reference
    missing from the cache this way); any other crds error, a lookup error
    included: with a pinned context and an operated cache, "no reference"
    means the cache or context is incomplete, which an operator fixes by
    syncing CRDS, not by changing the exposure; crds's own fatal exit (its
    cache's configuration unreadable, no server). A FileNotFoundError for a file
    under CRDS_PATH (or CRDS_REFPATH, CRDS_MAPPATH) is a reference missing
    from the cache. A full store is
    also recognised by its message (asdf reports it without an errno) and
    behind a wrapping exception.
    """
    names = _class_names(exc)
    if names & _UNREACHABLE_CRDS or _crds_fatal(exc):
        return CRDS_UNREACHABLE
    if "CrdsError" in names and not selects_no_reference(exc):
        return CRDS_LOOKUP
    if isinstance(exc, FileNotFoundError) and exc.filename and _in_crds_cache(exc.filename):
        return CRDS_REFERENCE_MISSING
    return _store_cause(exc)


# Where crds keeps its cache's files: CRDS_PATH, and the references and
# mappings where they are placed apart (a volume of their own).
_CRDS_CACHE_VARS = ("CRDS_PATH", "CRDS_REFPATH", "CRDS_MAPPATH")


def _in_crds_cache(filename: str | bytes | os.PathLike) -> bool:
    if not isinstance(filename, str | bytes | os.PathLike):
        return False  # a descriptor
    path = os.path.abspath(os.fsdecode(filename))
    return any(path.startswith(os.path.abspath(os.environ[var]) + os.sep)
               for var in _CRDS_CACHE_VARS if os.environ.get(var))


# What crds says when its rules, applied to the file's header, name no
# reference of a type the step needs (crds.client.api.get_files):
# "Error determining best reference for 'superbias'  =   No match found."
# The same first words carry any other error of that reference type's
# lookup (an rmap the cache lacks: "[Errno 2] ..."), which stays CRDS's.
_NO_REFERENCE = ("Error determining best reference for", "No match found")


def selects_no_reference(exc: BaseException) -> bool:
    """crds computed the best references from the file's header and its
    context's rules, and they name none of a type the run needs: a DATE-OBS
    before every reference, a FILTER or SUBARRAY no rule knows. A context's
    rules never change and the header is the file's, so the same run fails
    the same way until a new context is pinned or the file replaced: a fault
    of the data, dead-lettered (to redrive then), not CRDS down. (Parked,
    such files were run every half minute for ever, and as many of them as
    the stage's consumer takes at once stopped it for every other exposure.)
    A lookup that failed before any rule was applied (a server's answer, a
    date-based context offline) stays CRDS's."""
    text = str(exc)
    return type(exc).__name__ == "CrdsLookupError" and text.startswith(_NO_REFERENCE[0]) \
        and _NO_REFERENCE[1] in text \
        and not any(_class_names(e) & _UNREACHABLE_CRDS for e in causes(exc))


def causes(exc: BaseException, depth: int = 0):
    """The exceptions ``exc`` was raised from or during, a few deep (the CRDS
    client wraps them; a jwst step may raise its own over another)."""
    cause = exc.__cause__ or exc.__context__
    if cause is not None and depth < 5:
        yield cause
        yield from causes(cause, depth + 1)


def _store_cause(exc: BaseException | None, depth: int = 0) -> str | None:
    """A full or read-only store, or a mount gone, behind ``exc`` or the
    exceptions it was raised from."""
    if exc is None or depth > 5:
        return None
    # ssl's errors are OSErrors whose errno is OpenSSL's reason code (a key
    # that does not match its certificate is 116, ESTALE's number): no errno.
    if isinstance(exc, OSError) and "SSLError" not in _class_names(exc):
        if exc.errno in _STORE_ERRNOS:
            return _STORE_ERRNOS[exc.errno]
        if exc.errno in _MOUNT_ERRNOS:
            return _MOUNT_ERRNOS[exc.errno]
        text = str(exc).lower()
        for words, cause in _STORE_TEXTS.items():
            if words in text:
                return cause
    return _store_cause(exc.__cause__ or exc.__context__, depth + 1)


def classify_failure(exc: BaseException, input_path: str | os.PathLike | None = None) -> str:
    """Return "skipped", "transient", "permanent" or "infrastructure:<cause>"
    for an exception from a pipeline run.

    * skipped: stpipe's StpipeExitException with exit status 64, which jwst
      raises when there is no science data to calibrate (NoDataOnDetectorError:
      e.g. an MSA configuration that puts no spectra on NRS2). The exposure is
      done; there is no product.
    * infrastructure:<cause>: see infrastructure_cause (disk full, read-only
      store, a network mount gone (a stale handle), CRDS unreachable, a reference missing, a CRDS lookup error);
      a permanent failure becomes one when a reference the run used is not
      whole (after_reference_check, for the worker pool).
    * transient: the environment, not the exposure, failed, and the same job
      may succeed later or elsewhere: OSError in general (I/O
      error, too many open files, a connection reset;
      TimeoutError and ConnectionError are OSErrors), MemoryError (another
      job held the memory), a worker process that died (BrokenProcessPool),
      and interruptions
      (shutdown, cancellation).
    * permanent: everything else. ValueError, KeyError, validation errors,
      the same input and the same
      configuration fail the same way. Also OSErrors about permissions or
      wrong kinds of paths, which wait for an operator, and a missing input
      file (`input_path`, when given): the watcher only hands over complete
      files, so a vanished input was removed on purpose and will not come
      back by retrying. A missing file that is not the input (a reference
      being synced into the CRDS cache, a shared file system hiccup) stays
      transient.
    """
    names = _class_names(exc)
    if "StpipeExitException" in names:
        status = getattr(exc, "exit_status", None)
        return SKIPPED if status == NO_SCIENCE_DATA else PERMANENT
    if names & _INTERRUPTIONS and not _crds_fatal(exc):
        return TRANSIENT
    if isinstance(exc, MemoryError):
        return TRANSIENT
    cause = infrastructure_cause(exc)
    if cause is not None:
        return f"{INFRASTRUCTURE}:{cause}"
    if isinstance(exc, FileNotFoundError):
        return PERMANENT if _same_file(exc.filename, input_path) else TRANSIENT
    if isinstance(exc, OSError):
        if isinstance(exc, _PERMANENT_OS_ERRORS) or exc.errno in _PERMANENT_ERRNOS:
            return PERMANENT
        return TRANSIENT
    return PERMANENT


def after_reference_check(kind: str, broken: Mapping[str, str]) -> str:
    """``kind`` once the references the failed run used were checked
    (``broken``: path -> why it is not whole; steps/reference_integrity.py).

    A run that used a reference the cache holds only in part fails in
    whatever way the missing bytes make it fail (a reshape, a bad block): an
    error that reads as the data's. It is the cache's: every exposure using
    that file fails alike until it is synced again, and then succeeds. So a
    *permanent* failure with a broken reference is an infrastructure fault,
    parked until the file is whole, not a dead letter to redrive by hand.
    Every other kind stays: a retry, a skip or a park already waits.
    """
    if kind == PERMANENT and broken:
        return f"{INFRASTRUCTURE}:{CRDS_REFERENCE_CORRUPT}"
    return kind


def classify_task_failure(exc: BaseException, task: dict, log_path: str | None = None) -> str:
    """classify_failure for a worker-pool task, whose kwargs name the input
    (the daemon's pool: steps/reference_integrity.classify_run_failure, which
    also checks the references a permanent failure used)."""
    return classify_failure(exc, task.get("input_path"))
