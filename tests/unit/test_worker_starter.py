"""The starter thread every worker start runs on (worker_server_watch._Starter):
a thread that could not be started (EAGAIN: a pids limit reached, under
load) is started again by the next start. Before, the failed thread was
kept as "the starter": every later start was queued for a thread that never
ran, and every pool waited for its workers for good, unjudged (only a
running start is judged for a hung server)."""

import threading

import pytest

from calstream.daemon.doers import worker_server_watch


def test_a_starter_thread_that_could_not_start_is_started_by_the_next_start(monkeypatch):
    starter = worker_server_watch._Starter()
    real_start = threading.Thread.start
    refused = []

    def start_once_refused(thread):
        if thread.name == "calstream-worker-starter" and not refused:
            refused.append(thread)
            raise RuntimeError("can't start new thread")
        return real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_once_refused)
    with pytest.raises(RuntimeError):
        starter.submit(lambda: "first")
    future = starter.submit(lambda: "second")
    assert future.result(timeout=60) == "second"  # a bound for a loaded machine
