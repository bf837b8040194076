"""A worker seals each output the moment its task closes it (issue 15), and a
seal stands only for the bytes the file holds at the end: a file written
again, replaced or changed behind inotify's back after its early seal is
described by its final bytes."""

import logging
import mmap
import os
import threading
import time

import pytest

from calstream.daemon.doers import output_sealing
from calstream.daemon.doers.output_sealing import sealing
from calstream.steps.fitsfile import file_digest

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self"), reason="inotify is Linux's")


@pytest.fixture
def early_calls(monkeypatch, caplog):
    """Each early seal's path once it is done, and an event set per path."""
    real, calls, done = output_sealing._seal_file, [], {}

    def recording(path):
        result = real(path)
        calls.append((path.name, threading.current_thread().name))
        done.setdefault(path.name, threading.Event()).set()
        return result

    monkeypatch.setattr(output_sealing, "_seal_file", recording)
    caplog.set_level(logging.INFO, logger="calstream.worker")

    def wait(name):
        assert done.setdefault(name, threading.Event()).wait(10), f"{name} never sealed early"
    return calls, wait


def task(out, *writes):
    """A task's value after running ``writes`` (callables) in order."""
    for write in writes:
        write()
    return {"outputs": sorted(str(p) for p in out.iterdir() if not p.name.startswith("."))}


def check(value):
    for path, (digest, size) in value["sealed"].items():
        assert digest == file_digest(path)
        assert size == os.path.getsize(path)


def test_a_file_closed_before_the_task_ends_is_sealed_early(tmp_path, early_calls, monkeypatch):
    calls, wait = early_calls
    hashed = []

    def digest(path):
        hashed.append((path.name, threading.current_thread().name))
        return file_digest(path)

    monkeypatch.setattr(output_sealing, "file_digest", digest)
    a, b = tmp_path / "x_rateints.fits", tmp_path / "x_rate.fits"
    with sealing(str(tmp_path)) as seal:
        value = seal(task(tmp_path, lambda: a.write_bytes(os.urandom(3 << 20)),
                          lambda: wait(a.name), lambda: b.write_bytes(os.urandom(1 << 20))))
    check(value)
    assert set(value["sealed"]) == {str(a), str(b)}
    assert any(name == a.name and thread.startswith("early-seal") for name, thread in calls)
    # ... and read once, there: the end only reads what was not sealed before.
    assert [thread.startswith("early-seal") for name, thread in hashed if name == a.name] == [True]


def test_a_file_written_again_after_its_early_seal_is_described_by_its_last_bytes(
        tmp_path, early_calls, caplog):
    _, wait = early_calls
    a = tmp_path / "x_rate.fits"
    keep = []

    def append_and_keep_open():  # no close: only the modify event can void the seal
        f = open(a, "ab")
        f.write(b"more")
        f.flush()
        keep.append(f)

    with sealing(str(tmp_path)) as seal:
        value = seal(task(tmp_path, lambda: a.write_bytes(b"first" * 1000), lambda: wait(a.name),
                          append_and_keep_open))
    keep[0].close()
    check(value)
    assert value["sealed"][str(a)][1] == 5004
    assert "sealed again" not in caplog.text  # the event voided it, not the stat backstop


def test_a_file_replaced_by_a_rename_after_its_early_seal_is_described_by_the_new_one(
        tmp_path, early_calls):
    _, wait = early_calls
    a, other = tmp_path / "x_rate.fits", tmp_path.parent / f"{tmp_path.name}-other"
    other.write_bytes(b"second" * 10)
    with sealing(str(tmp_path)) as seal:
        value = seal(task(tmp_path, lambda: a.write_bytes(b"first" * 10), lambda: wait(a.name),
                          lambda: os.replace(other, a)))
    check(value)
    assert value["sealed"][str(a)] == [file_digest(a), 60]


def test_a_change_through_mmap_that_inotify_misses_is_caught_by_the_stat(tmp_path, early_calls,
                                                                          caplog):
    _, wait = early_calls
    a = tmp_path / "x_rate.fits"
    mapped = []

    def poke_through_mmap():  # kept open: no close event either
        time.sleep(0.05)  # the next clock tick: the mtime moves
        f = open(a, "r+b")
        m = mmap.mmap(f.fileno(), 0)
        m[0:4] = b"ZZZZ"
        mapped.extend([m, f])

    with sealing(str(tmp_path)) as seal:
        value = seal(task(tmp_path, lambda: a.write_bytes(b"A" * 8192), lambda: wait(a.name),
                          poke_through_mmap))
    check(value)
    assert "changed after it was sealed early" in caplog.text
    for held in mapped:
        held.close()
    assert a.read_bytes()[:4] == b"ZZZZ"


def test_without_inotify_everything_is_sealed_at_the_end(tmp_path, monkeypatch):
    def no_inotify(directory):
        raise OSError(24, "inotify_init1: too many open files")

    monkeypatch.setattr(output_sealing, "_Inotify", no_inotify)
    a = tmp_path / "x_rate.fits"
    with sealing(str(tmp_path)) as seal:
        value = seal(task(tmp_path, lambda: a.write_bytes(b"data" * 100)))
    check(value)
    assert list(value["sealed"]) == [str(a)]


def test_a_failing_task_leaves_no_watcher_behind(tmp_path):
    def ours():
        return {t for t in threading.enumerate() if t.name.startswith(("early-seal", "inotify"))}

    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError), sealing(str(tmp_path)):
        (tmp_path / "x_rate.fits").write_bytes(b"partial")
        assert ours()
        raise RuntimeError("the pipeline failed")
    for thread in ours():  # the inotify descriptor is closed in the background
        thread.join(10)
    assert not ours()
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_value_without_outputs_is_returned_as_it_is(tmp_path):
    with sealing(str(tmp_path)) as seal:
        assert seal({"previews": []}) == {"previews": []}
    with sealing(None) as seal:
        assert seal({"outputs": []}) == {"outputs": []}
