"""The work directory's lock on a mount that does not answer (a hard NFS
mount whose server is away). `calstream run` took it on its main thread
before anything else, untimed: the daemon waited there for ever, before its
operations endpoint was up, unseen. Now the take is left to the start's
wait for its work directory (which parks, work_dir_hung) and goes on in its
thread; the start's own take waits for that one, so the lock is taken once
(two takes answered at once flocked two descriptors of this process, the
second refused as "another daemon"). A real thread held until the test lets
it go; a real flock."""

import os
import threading

from calstream.daemon.doers.work_dir_lock import holding, in_use


def test_a_silent_work_dir_leaves_the_lock_to_the_start_which_takes_it_once(tmp_path,
                                                                          monkeypatch):
    work = tmp_path / "work"
    answers, asked = threading.Event(), threading.Event()
    real = os.mkdir

    def mkdir(path, *args, **kw):
        if os.fspath(path) == os.fspath(work) and not answers.is_set():
            asked.set()
            answers.wait(20)  # a bound for a broken test, not a measure
        return real(path, *args, **kw)

    monkeypatch.setattr(os, "mkdir", mkdir)
    failures = []

    def start_take(lock):
        try:
            lock.take()
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    try:
        with holding(work, seconds=0.2) as lock:
            assert asked.is_set() and not answers.is_set() and not lock.held
            start = threading.Thread(target=start_take, args=(lock,))
            start.start()  # the start's wait for its work directory, meanwhile
            answers.set()  # the mount answers: both takes go on
            start.join(10)
            assert not failures and lock.held
            assert in_use(work) is not None  # held by this process, through one descriptor
        assert in_use(work) is None
    finally:
        answers.set()
