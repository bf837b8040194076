"""classify_failure: skip, retry or give up."""

from __future__ import annotations

import errno
import os
import sys
from concurrent.futures.process import BrokenProcessPool

import pytest
from stpipe.exceptions import StpipeExitException

from calstream.steps.failures import (
    PERMANENT,
    SKIPPED,
    TRANSIENT,
    classify_failure,
    infrastructure_cause,
)


def test_no_science_data_is_skipped():
    from jwst.assign_wcs.util import NoDataOnDetectorError

    assert classify_failure(NoDataOnDetectorError()) == SKIPPED
    assert classify_failure(StpipeExitException(64, "no data")) == SKIPPED


def test_other_exit_status_is_permanent():
    assert classify_failure(StpipeExitException(1, "failed")) == PERMANENT


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EIO, "I/O error"),
        TimeoutError("timed out"),
        ConnectionResetError(),
        MemoryError(),
        BrokenProcessPool("worker died"),
        KeyboardInterrupt(),
        FileNotFoundError(errno.ENOENT, "No such file", "/crds/references/jwst/x.fits"),
    ],
)
def test_transient(exc):
    assert classify_failure(exc, "/inbox/jw01234001001_02101_00001_nrcb1_uncal.fits") == TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value"),
        KeyError("meta"),
        RuntimeError("boom"),
        PermissionError(errno.EACCES, "Permission denied"),
        IsADirectoryError(errno.EISDIR, "Is a directory"),
    ],
)
def test_permanent(exc):
    assert classify_failure(exc) == PERMANENT


def test_missing_input_is_permanent_missing_other_file_is_transient(tmp_path):
    source = tmp_path / "jw01234001001_02101_00001_nrcb1_uncal.fits"
    missing_input = FileNotFoundError(errno.ENOENT, "No such file", str(source))
    assert classify_failure(missing_input, source) == PERMANENT
    assert classify_failure(missing_input) == TRANSIENT


def test_validation_error_is_permanent(tmp_path):
    from stdatamodels.jwst.datamodels import Level1bModel

    model = Level1bModel(strict_validation=True)
    with pytest.raises(Exception) as info:
        model.meta.exposure.type = "NOT_AN_EXP_TYPE"
    assert classify_failure(info.value) == PERMANENT


# Issue 13: a full or read-only store and CRDS faults are infrastructure, not the
# exposure's fault (ENOSPC was "transient" before: retried 3 times, then dead-lettered).
@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk_full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only"),
    ],
)
def test_store_faults_are_infrastructure(exc, cause):
    assert classify_failure(exc) == f"infrastructure:{cause}"
    assert infrastructure_cause(exc) == cause


def test_crds_faults_are_infrastructure():
    from crds.core.exceptions import CrdsDownloadError, CrdsLookupError, CrdsNetworkError

    assert classify_failure(CrdsNetworkError("serverless")) == "infrastructure:crds_unreachable"
    assert classify_failure(CrdsDownloadError("gone")) == "infrastructure:crds_unreachable"
    assert classify_failure(CrdsLookupError("no match")) == "infrastructure:crds_lookup"


def test_rules_that_name_no_reference_for_the_file_are_the_file_s_fault():
    from crds.core.exceptions import CrdsLookupError, ServiceError

    # As crds's client raises it when the context's rules, applied to the
    # header, name no reference of a needed type (a DATE-OBS before all of them).
    none = CrdsLookupError("Error determining best reference for", "'superbias'", " = ",
                           " No match found.")
    assert classify_failure(none) == PERMANENT
    assert infrastructure_cause(none) is None
    # Another error of that type's lookup (an rmap the cache lacks) is the cache's.
    hole = CrdsLookupError("Error determining best reference for", "'dark'", " = ",
                           " [Errno 2] No such file or directory: 'jwst_nircam_dark_0002.rmap'")
    assert classify_failure(hole) == "infrastructure:crds_lookup"
    # The same words over a failure to reach the server are the server's.
    try:
        try:
            raise ServiceError("CRDS jsonrpc failure")
        except ServiceError as down:
            raise CrdsLookupError("Error determining best reference for", "'dark'", " = ",
                                  " No match found.") from down
    except CrdsLookupError as wrapped:
        assert classify_failure(wrapped) == "infrastructure:crds_lookup"


def test_file_missing_from_crds_cache_is_infrastructure(tmp_path, monkeypatch):
    monkeypatch.setenv("CRDS_PATH", str(tmp_path))
    ref = tmp_path / "references" / "jwst" / "jwst_nircam_gain_0001.fits"
    missing = FileNotFoundError(errno.ENOENT, "No such file", str(ref))
    assert classify_failure(missing) == "infrastructure:crds_reference_missing"
    elsewhere = FileNotFoundError(errno.ENOENT, "No such file", "/elsewhere/x.fits")
    assert classify_failure(elsewhere) == TRANSIENT
    assert infrastructure_cause(ValueError("bad")) is None



def test_file_missing_from_crds_references_elsewhere_is_infrastructure(tmp_path, monkeypatch):
    """crds keeps its references under CRDS_REFPATH when set (a volume of
    their own), its mappings under CRDS_MAPPATH: a file missing there is the
    cache's as much as one under CRDS_PATH. It was transient, and dead-lettered
    retries_exhausted after max_attempts."""
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "crds"))
    monkeypatch.setenv("CRDS_REFPATH", str(tmp_path / "refs"))
    monkeypatch.setenv("CRDS_MAPPATH", str(tmp_path / "maps"))
    for ref in (tmp_path / "refs" / "jwst" / "jwst_nircam_gain_0001.fits",
                tmp_path / "maps" / "jwst" / "jwst_nircam_gain_0001.rmap"):
        missing = FileNotFoundError(errno.ENOENT, "No such file", str(ref))
        assert classify_failure(missing) == "infrastructure:crds_reference_missing"
    # A root's name as a prefix of another directory's is not that root.
    beside = FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path / "refs2" / "x.fits"))
    assert classify_failure(beside) == TRANSIENT

def test_full_store_without_errno_or_wrapped_is_infrastructure():
    # What asdf raises when jwst writes a product on a full file system.
    asdf = OSError("Not enough space on disk: requested 538337, available 0. 25600 requested "
                   "and 48 written")
    assert classify_failure(asdf) == "infrastructure:disk_full"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("could not save the model") from inner
    except RuntimeError as wrapped:
        assert classify_failure(wrapped) == "infrastructure:disk_full"
    assert classify_failure(OSError("Read-only file system")) == "infrastructure:read_only"


def _raised(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the exception as a worker's run sees it
        return exc
    raise AssertionError("nothing raised")


def test_crds_fatal_exit_is_crds_out_of_reach(tmp_path, monkeypatch):
    """crds ends a run with its "(FATAL) CRDS server connection and cache
    load FAILED" as sys.exit(-1) when its cache has no configuration (not
    mounted, emptied, half-synced) and no server answers: a SystemExit that
    a worker catches. It was an "interruption", transient, and after
    max_attempts every exposure was dead-lettered retries_exhausted for a
    cache an operator had only to mount again."""
    from crds.core import heavy_client

    monkeypatch.setenv("CRDS_PATH", str(tmp_path))  # a cache with nothing in it
    monkeypatch.setenv("CRDS_SERVER_URL", "https://jwst-serverless-mode.stsci.edu")
    fatal = _raised(lambda: heavy_client.load_server_info("jwst"))
    assert isinstance(fatal, SystemExit)
    assert classify_failure(fatal) == "infrastructure:crds_unreachable"
    # Any other SystemExit (a shutdown) is still an interruption.
    assert classify_failure(_raised(lambda: sys.exit(0))) == TRANSIENT


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ENOTCONN, errno.ENOLINK])
def test_a_network_mount_gone_is_infrastructure_not_the_exposures_fault(code):
    """A stale NFS handle or a FUSE transport gone, during a run: the mount's
    fault, parked until it is restored. As transient it was retried a few
    times, then every exposure it touched was dead-lettered
    retries_exhausted, though nothing was wrong with any of them."""
    exc = OSError(code, os.strerror(code), "/inbox/jw01234001001_02101_00001_nrcb1_uncal.fits")
    assert classify_failure(exc, "/inbox/jw01234001001_02101_00001_nrcb1_uncal.fits") \
        == "infrastructure:mount_gone"
    wrapped = RuntimeError("could not open the model")
    wrapped.__cause__ = exc
    assert classify_failure(wrapped) == "infrastructure:mount_gone"
    # An I/O error may be a damaged file as well as a failing mount: as before.
    assert classify_failure(OSError(errno.EIO, "Input/output error")) == TRANSIENT


def test_an_ssl_error_whose_reason_code_is_an_errno_s_number_is_not_that_errno():
    """OpenSSL's KEY_VALUES_MISMATCH comes as SSLError(116, ...): 116 is
    ESTALE on Linux, and a certificate mistake was parked as a mount gone."""
    import ssl

    exc = ssl.SSLError(116, "[X509: KEY_VALUES_MISMATCH] key values mismatch")
    assert classify_failure(exc) == TRANSIENT
    assert classify_failure(ssl.SSLError(errno.ENOSPC, "a reason numbered 28")) == TRANSIENT
