"""The read of a worker's answer ends once its watcher finds the run is to
end, even when the kill does not close the worker's end of the pipe: a
worker in a cgroup v1 freezer's frozen cgroup takes no SIGKILL until thawed
(v2's freezer lets it die), and one in uninterruptible sleep (D, a hard NFS
mount) not until its I/O returns. Before, the watcher looked once, killed,
and left: the read, its run and its worker's turn waited for ever, which is
what worker_answers.py was written to end. A real pipe (a socket pair, as
the pool's), its far end kept open as such a worker keeps it."""

import struct
import threading
from multiprocessing import Pipe

import pytest

from calstream.daemon.doers.worker_answers import received


class Ended(Exception):
    pass


def test_a_read_whose_worker_outlives_its_kill_ends_as_the_watcher_found():
    mine, workers = Pipe()
    # The length of a whole answer and a part of it: the rest never comes.
    workers._send(struct.pack("!i", 100_000) + b"\x80\x05" + b"\0" * 1000)
    looks = []

    def watch():
        looks.append(1)
        return Ended("killed, and still there") if len(looks) >= 2 else None

    raised = []

    def read():
        try:
            received(mine, watch)
        except BaseException as exc:  # noqa: BLE001 - what the read ended with, checked below
            raised.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)  # a bound for a loaded machine: the read ends within a look or two
    try:
        assert not reader.is_alive(), "the read still waits for the rest of the answer"
        assert len(raised) == 1 and isinstance(raised[0], Ended), raised
    finally:
        workers.close()  # ends a read left waiting (on the code before the fix)
        reader.join(10)
        mine.close()


def test_a_read_that_ends_well_returns_the_answer_and_stops_its_watcher():
    mine, workers = Pipe()
    workers.send(("ok", "x" * 100_000))
    assert received(mine, lambda: None) == ("ok", "x" * 100_000)
    assert not [t for t in threading.enumerate() if t.name == "answer-watch"]
    with pytest.raises(EOFError):
        workers.close()
        received(mine, lambda: None)
    mine.close()
