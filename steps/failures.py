"""What a pipeline failure means for the exposure: skip it, retry it, or give up.

A pure function of the exception, so the daemon can decide without jwst,
stpipe or crds imported (classes are recognised by name along their MRO).
"""

from __future__ import annotations

import errno
import os

SKIPPED = "skipped"
TRANSIENT = "transient"
PERMANENT = "permanent"

# stpipe's exit status for "no science data" (e.g. NoDataOnDetectorError):
# `strun` exits with it, and it is an expected result, not an error.
NO_SCIENCE_DATA = 64

# OSErrors that retrying cannot fix: the path or the permissions are wrong,
# and stay wrong until someone changes the configuration.
_PERMANENT_OS_ERRORS = (PermissionError, IsADirectoryError, NotADirectoryError)
_PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.EISDIR}

# crds errors that are about reaching the server or the cache, not about the rules.
_TRANSIENT_CRDS = {"CrdsNetworkError", "CrdsDownloadError", "ServiceError"}

# Process-level interruptions: the job did not fail on its merits.
_INTERRUPTIONS = {"KeyboardInterrupt", "SystemExit", "CancelledError", "BrokenProcessPool"}


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _same_file(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    if a is None or b is None:
        return False
    return os.path.abspath(os.fspath(a)) == os.path.abspath(os.fspath(b))


def classify_failure(exc: BaseException, input_path: str | os.PathLike | None = None) -> str:
    """Return "skipped", "transient" or "permanent" for an exception from a pipeline run.

    * skipped: stpipe's StpipeExitException with exit status 64, which jwst
      raises when there is no science data to calibrate (NoDataOnDetectorError:
      e.g. an MSA configuration that puts no spectra on NRS2). The exposure is
      done; there is no product.
    * transient: the environment, not the exposure, failed, and the same job
      may succeed later or elsewhere: OSError in general (disk full, I/O
      error, stale NFS handle, too many open files, a connection reset;
      TimeoutError and ConnectionError are OSErrors), MemoryError (another
      job held the memory), a worker process that died (BrokenProcessPool),
      crds failing to reach its server or download a file, and interruptions
      (shutdown, cancellation).
    * permanent: everything else. ValueError, KeyError, validation errors,
      "no reference matches" from crds: the same input and the same
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
    if names & _INTERRUPTIONS:
        return TRANSIENT
    if isinstance(exc, MemoryError):
        return TRANSIENT
    if names & _TRANSIENT_CRDS:
        return TRANSIENT
    if isinstance(exc, FileNotFoundError):
        return PERMANENT if _same_file(exc.filename, input_path) else TRANSIENT
    if isinstance(exc, OSError):
        if isinstance(exc, _PERMANENT_OS_ERRORS) or exc.errno in _PERMANENT_ERRNOS:
            return PERMANENT
        return TRANSIENT
    return PERMANENT


def classify_task_failure(exc: BaseException, task: dict) -> str:
    """classify_failure for a worker-pool task, whose kwargs name the input."""
    return classify_failure(exc, task.get("input_path"))
