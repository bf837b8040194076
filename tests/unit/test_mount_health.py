"""An I/O error during a run: a mount that does not answer a second look is
the mount's fault (parked, resumed by itself), a file that alone fails to
read stays the file's (transient, then a dead letter). Before, every EIO was
transient: a long outage of a soft NFS mount dead-lettered every exposure it
touched ``retries_exhausted``. The server's absence is played by the look's
own system calls failing as a soft mount's do (EIO); the files are real."""

from __future__ import annotations

import errno
import os

import pytest

from calstream.steps import mount_health
from calstream.steps.reference_integrity import classify_run_failure

NAME = "jw01234001001_02101_00001_nrcb1_uncal.fits"


def _run(tmp_path):
    inbox, scratch = tmp_path / "inbox", tmp_path / "products" / ".scratch" / "w1"
    inbox.mkdir()
    scratch.mkdir(parents=True)
    (inbox / NAME).write_bytes(b"SIMPLE  =")
    task = {"input_path": str(inbox / NAME), "output_dir": str(scratch)}
    return task, inbox, scratch


def _eio(path=None) -> OSError:
    return OSError(errno.EIO, os.strerror(errno.EIO), *([str(path)] if path else []))


def _failing_for(monkeypatch, directory, code=errno.EIO):
    """The look's system calls at ``directory`` fail with ``code``, as a soft
    mount whose server is away (or a full disk) answers."""
    scandir, open_ = os.scandir, os.open

    def looking(path, *args, **kwargs):
        if os.fspath(path).startswith(str(directory)):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return (scandir if not args else open_)(path, *args, **kwargs)

    monkeypatch.setattr(mount_health.os, "scandir", lambda path: looking(path))
    monkeypatch.setattr(mount_health.os, "open", looking)


def test_a_damaged_file_on_a_mount_that_answers_stays_the_file_s(tmp_path):
    task, inbox, scratch = _run(tmp_path)
    assert classify_run_failure(_eio(inbox / NAME), task) == "transient"
    wrapped = RuntimeError("could not read the SCI array")
    wrapped.__cause__ = _eio()  # a read on an open file names none
    assert classify_run_failure(wrapped, task) == "permanent"  # as before: jwst's error
    assert [p.name for p in scratch.iterdir()] == []  # the probe removed


@pytest.mark.parametrize("away", ["inbox", "products", "crds"])
def test_an_io_error_on_a_mount_that_does_not_answer_is_the_mount_s(tmp_path, monkeypatch,
                                                                   caplog, away):
    task, inbox, scratch = _run(tmp_path)
    (tmp_path / "crds" / "references").mkdir(parents=True)
    monkeypatch.setenv("CRDS_PATH", str(tmp_path / "crds"))
    _failing_for(monkeypatch, tmp_path / away)
    wrapped = RuntimeError("could not read the SCI array")
    wrapped.__cause__ = _eio()
    assert classify_run_failure(wrapped, task) == "infrastructure:mount_gone"
    assert classify_run_failure(_eio(inbox / NAME), task) == "infrastructure:mount_gone"
    assert "does not answer a second look" in caplog.text and str(tmp_path / away) in caplog.text


def test_a_store_that_refuses_the_look_for_space_is_a_full_disk(tmp_path, monkeypatch):
    task, inbox, scratch = _run(tmp_path)
    _failing_for(monkeypatch, tmp_path / "products", errno.ENOSPC)
    assert classify_run_failure(_eio(inbox / NAME), task) == "infrastructure:disk_full"


def test_other_failures_are_not_looked_at(tmp_path, monkeypatch):
    task, inbox, scratch = _run(tmp_path)
    _failing_for(monkeypatch, tmp_path)
    assert classify_run_failure(OSError(errno.EMFILE, "Too many open files"), task) \
        == "transient"
    assert classify_run_failure(ValueError("bad shape"), task) == "permanent"
