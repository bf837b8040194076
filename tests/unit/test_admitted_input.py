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


# -- the input pinned for its run (PinnedInput, after_run) ---------------------

SIG = (2880, 10, 7, 11)


def test_after_the_run_a_name_gone_is_no_fault_another_file_there_is():
    own = (1, 7)
    assert admitted_input.after_run(SIG, SIG, own, own) == admitted_input.UNCHANGED
    assert admitted_input.after_run(SIG, SIG, own, None) == admitted_input.UNCHANGED
    # An unlink moves the open file's ctime, as a write does: its bytes decide.
    moved = (*SIG[:3], 12)
    assert admitted_input.after_run(SIG, moved, own, None) == admitted_input.HASH
    assert admitted_input.after_run(SIG, moved, own, own) == admitted_input.HASH
    # Another inode, or the same inode number on another device, at the name.
    assert admitted_input.after_run(SIG, SIG, own, (1, 8)) == admitted_input.REPLACED
    assert admitted_input.after_run(SIG, SIG, own, (2, 7)) == admitted_input.REPLACED


def _pinned(tmp_path, path, digest, sig=None):
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return admitted_input.PinnedInput(path, digest, sig, scratch)


def test_a_pinned_input_deleted_or_moved_after_the_run_read_it_is_calibrated(tmp_path):
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    with _pinned(tmp_path, path, digest, list(sig)) as pinned:
        pinned_name = pinned.name
        assert os.path.basename(pinned_name) == path.name  # jwst names products after it
        assert open(pinned_name, "rb").read() == path.read_bytes()  # noqa: SIM115
        path.unlink()  # the archiver, once the run has read it
        pinned.confirm()
    assert not os.path.lexists(os.path.dirname(pinned_name))  # the private name is gone
    path = _file(tmp_path)
    with _pinned(tmp_path, path, digest, list(sig)) as pinned:
        os.replace(path, tmp_path / "archive.fits")
        pinned.confirm()


def test_a_name_replaced_after_the_check_still_leads_the_run_to_the_checked_bytes(tmp_path):
    path = _file(tmp_path)
    admitted = path.read_bytes()
    digest = file_digest(path)
    other = tmp_path / "other"
    with _pinned(tmp_path, path, digest) as pinned:
        # A rename-over between the check and jwst's open of the file...
        other.write_bytes(b"SIMPLE  = T" + b"x" * 2869)
        os.replace(other, path)
        with open(pinned.name, "rb") as f:
            assert f.read() == admitted  # ...is not what jwst reads
        # The other bytes under the name are a replacement all the same.
        with pytest.raises(InputChanged, match="replaced while it was calibrated"):
            pinned.confirm()
        path.unlink()  # gone again: the run read the admitted bytes
        pinned.confirm()


def test_a_pinned_input_written_during_the_run_is_not_calibrated(tmp_path):
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    with _pinned(tmp_path, path, digest, list(sig)) as pinned:
        with open(path, "r+b") as f:  # in place: the same inode, other bytes
            f.seek(100)
            f.write(b"changed")
        path.unlink()
        with pytest.raises(InputChanged, match="changed while it was calibrated") as changed:
            pinned.confirm()
    assert classify_failure(changed.value, str(path)) == "permanent"


def test_an_input_gone_before_the_run_is_a_permanent_failure_of_its_input(tmp_path):
    path = _file(tmp_path)
    digest = file_digest(path)
    path.unlink()
    with pytest.raises(FileNotFoundError) as gone:
        _pinned(tmp_path, path, digest)
    assert classify_failure(gone.value, str(path)) == "permanent"
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_pinned_input_with_other_bytes_is_refused_before_the_run(tmp_path):
    path = _file(tmp_path)
    digest = file_digest(path)
    path.write_bytes(b"SIMPLE  = T" + b"y" * 2869)
    with pytest.raises(InputChanged, match="changed since it was admitted"):
        _pinned(tmp_path, path, digest)
    assert list((tmp_path / "scratch").iterdir()) == []


def test_without_named_open_files_the_name_is_checked_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(admitted_input, "OPEN_FILES", str(tmp_path / "none-{pid}-{fd}"))
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    with _pinned(tmp_path, path, digest, list(sig)) as pinned:
        assert pinned.name == str(path)
        pinned.confirm()
        path.unlink()
        with pytest.raises(FileNotFoundError):
            pinned.confirm()


def test_a_fifo_pinned_in_its_place_is_refused_without_waiting(tmp_path):
    path = _file(tmp_path)
    digest = file_digest(path)
    path.unlink()
    os.mkfifo(path)  # opened without waiting (O_NONBLOCK), judged by fstat
    with pytest.raises(InputChanged, match="no longer a regular file"):
        _pinned(tmp_path, path, digest)


def test_a_replacement_of_another_size_is_refused_unread(tmp_path, monkeypatch):
    """Bytes of another size cannot be the admitted ones: refused by the
    signature's size, not by hashing the replacement (a sparse 200 GB file
    under the name held the worker for minutes, hashing its hole)."""
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    with open(tmp_path / "huge", "wb") as f:
        f.truncate(1 << 30)
    os.replace(tmp_path / "huge", path)
    monkeypatch.setattr(admitted_input, "file_digest", lambda p: pytest.fail("hashed"))
    for check in (lambda: check_admitted(path, digest, list(sig)),
                  lambda: _pinned(tmp_path, path, digest, list(sig))):
        with pytest.raises(InputChanged, match=f"admitted {digest}, 2880 bytes; now 1073741824"):
            check()


def test_a_pinned_input_grown_during_the_run_is_refused_unread(tmp_path, monkeypatch):
    path = _file(tmp_path)
    digest, sig = file_digest(path), stat_sig(os.stat(path))
    with _pinned(tmp_path, path, digest, list(sig)) as pinned:
        os.truncate(path, 1 << 30)  # in place: the same inode, a hole of 1 GiB more
        monkeypatch.setattr(admitted_input, "file_digest", lambda p: pytest.fail("hashed"))
        with pytest.raises(InputChanged, match="while it was calibrated .*; now 1073741824"):
            pinned.confirm()


def test_an_orders_input_written_during_the_run_is_refused_after_it(tmp_path):
    """A stage-2 or stage-3 run's inputs (admitted_input.check_order_inputs):
    other bytes under a member's name after the check before the run are
    refused after it; a file merely touched is not."""
    from calstream.steps.admitted_input import check_order_inputs, check_order_inputs_after

    rate, cal = tmp_path / "a_rate.fits", tmp_path / "b_cal.fits"
    rate.write_bytes(b"r" * 100)
    cal.write_bytes(b"c" * 100)
    inputs = [{"path": str(p), "digest": file_digest(p), "signature": None} for p in (rate, cal)]
    before = check_order_inputs(inputs)
    os.utime(cal, ns=(1, 1))  # touched: the same bytes
    check_order_inputs_after(inputs, before)
    rate.write_bytes(b"R" * 100)
    with pytest.raises(InputChanged, match="a_rate.fits"):
        check_order_inputs_after(inputs, before)
