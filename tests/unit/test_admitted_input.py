"""The worker's check that its input still holds the arrival's bytes
(steps/admitted_input.py): before and after the run, by the admission's
signature when it stands, else by the digest."""

import os
import threading

import pytest

from calstream.steps import admitted_input
from calstream.steps.admitted_input import InputChanged, check_admitted, stat_sig
from calstream.steps.failures import classify_failure
from calstream.steps.fitsfile import file_digest


def _file(tmp_path, data=b"SIMPLE  = T" + b" " * 2869):
    path = tmp_path / "jw01234001001_02101_00001_nrcb1_uncal.fits"
    path.write_bytes(data)
    return path


def test_the_admitted_signature_spares_a_second_read(tmp_path, monkeypatch):
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    monkeypatch.setattr(admitted_input, "file_digest", lambda p: pytest.fail("read again"))
    assert check_admitted(path, digest, list(sig)) == sig


def test_a_file_merely_touched_is_still_the_admitted_one(tmp_path):
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    os.utime(path, ns=(1, 1))  # another signature, the same bytes: calibrated
    assert check_admitted(path, digest, list(sig)) != sig


def test_other_bytes_under_the_name_are_not_calibrated(tmp_path):
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    other = tmp_path / "other"
    other.write_bytes(b"SIMPLE  = T" + b"x" * 2869)
    os.replace(other, path)
    with pytest.raises(InputChanged, match=f"admitted {digest}, now sha256:") as changed:
        check_admitted(path, digest, list(sig))
    # A data fault: dead-lettered at once, never retried.
    assert classify_failure(changed.value, str(path)) == "permanent"


def test_a_file_gone_is_a_permanent_failure_of_its_input(tmp_path):
    path = _file(tmp_path)
    digest = file_digest(path)
    path.unlink()
    with pytest.raises(FileNotFoundError) as gone:
        check_admitted(path, digest)
    assert classify_failure(gone.value, str(path)) == "permanent"


def test_a_fifo_in_its_place_is_refused_without_waiting(tmp_path):
    path = _file(tmp_path)
    digest = file_digest(path)
    path.unlink()
    os.mkfifo(path)
    out: list = []

    def check():
        try:
            check_admitted(path, digest)
        except InputChanged as exc:
            out.append(str(exc))

    reader = threading.Thread(target=check, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert out and "no longer a regular file" in out[0]
