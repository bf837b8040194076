"""One daemon per work directory (daemon/doers/work_dir_lock.py): a second
``calstream run`` or ``calstream demo`` on a directory a daemon holds
refuses to start, and a daemon killed with -9 leaves nothing held."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from calstream.daemon.doers import work_dir_lock

pytestmark = pytest.mark.integration

CALSTREAM = str(Path(sys.executable).with_name("calstream"))
HOLD = ("import sys, time; from pathlib import Path; "
        "from calstream.daemon.doers import work_dir_lock as w; "
        "cm = w.holding(Path(sys.argv[1])); cm.__enter__(); print('held', flush=True); "
        "time.sleep(600)")


# A start that waits for its work directory re-checks it every half second.
WAITING = {**os.environ, "CALSTREAM_PARK_RECHECK_SECONDS": "0.5", "CALSTREAM_MAX_ATTEMPTS": "2",
           "CALSTREAM_RETRY_BACKOFF": "0.1"}


def _holder(work: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_daemon_on_a_held_work_dir_refuses_to_start(tmp_path):
    work = tmp_path / "work"
    holder = _holder(work)
    try:
        run = subprocess.run([CALSTREAM, "run", "--work-dir", str(work), "--metrics-address",
                              "127.0.0.1:0"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2, run.stderr
        assert f"in use by another calstream daemon (pid {holder.pid} on" in run.stderr
        assert "Traceback" not in run.stderr
        assert not (work / "broker").exists()  # refused before the embedded broker started
        assert work_dir_lock.in_use(work) is not None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the lock with the process: nothing to clean up by hand.
    assert work_dir_lock.in_use(work) is None
    with work_dir_lock.holding(work):
        pass


def test_a_demo_does_not_clear_a_running_demo_s_directory(tmp_path):
    work = tmp_path / "demo"
    work.mkdir()
    (work / ".calstream-demo").write_text("created by calstream demo\n")
    (work / "products").mkdir()
    holder = _holder(work)
    try:
        demo = subprocess.run([CALSTREAM, "demo", "--work-dir", str(work)],
                              capture_output=True, text=True, timeout=120)
        assert demo.returncode != 0
        assert "in use by a running demo" in demo.stderr
        assert (work / "products").is_dir()  # not cleared
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_lock_in_this_process_is_exclusive_and_released(tmp_path):
    work = tmp_path / "work"
    with work_dir_lock.holding(work):
        with pytest.raises(work_dir_lock.WorkDirInUse, match=f"pid {os.getpid()}"):
            with work_dir_lock.holding(work):
                pass
    with work_dir_lock.holding(work):  # released on leaving: taken again
        assert work_dir_lock.in_use(work) is not None
    assert work_dir_lock.in_use(work) is None


@contextlib.contextmanager
def read_only_view(real: Path, view: Path):
    """``view``: ``real`` bind-mounted read-only (a disk not writable yet);
    the yielded callable remounts it read-write: the same directory, so the
    same lock file, seen at both paths."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    real.mkdir(parents=True)
    view.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(real), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield lambda: subprocess.run(["mount", "-o", "remount,bind,rw", str(view)], check=True)
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def _line_with(stream, words: str) -> str | None:
    """The first line of ``stream`` that holds ``words``; None at its end."""
    for line in stream:
        if words in line:
            return line
    return None


@pytest.mark.parametrize("meanwhile", ["alone", "another daemon"])
def test_a_work_dir_usable_only_after_the_start_is_locked_then(tmp_path, meanwhile):
    """The work directory refuses the lock file at start (a read-only disk):
    the daemon starts unlocked and waits for the directory. On main it never
    took the lock when the directory came back, so a second daemon ran
    alongside. Now it takes the lock before it writes anything there; if
    another daemon took it meanwhile, it stops as at start (exit 2)."""
    real, work = tmp_path / "disk", tmp_path / "work"
    with read_only_view(real, work) as writable:
        first = subprocess.Popen([CALSTREAM, "run", "--role", "watcher", "--work-dir", str(work),
                                  "--metrics-address", "127.0.0.1:0"], env=WAITING,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        holder = None
        try:
            assert _line_with(first.stderr, "could not lock the work directory"), first.wait()
            if meanwhile == "another daemon":
                holder = _holder(real)  # the same directory, where it is writable
            writable()
            started = _line_with(first.stdout, "calstream: metrics")
            if meanwhile == "alone":
                assert started, first.stderr.read()
                assert f"pid {first.pid} on" in (work_dir_lock.in_use(work) or ""), \
                    "the daemon runs without holding its work directory"
                second = subprocess.run([CALSTREAM, "run", "--role", "watcher", "--work-dir",
                                         str(work), "--metrics-address", "127.0.0.1:0"],
                                        capture_output=True, text=True, timeout=120)
                assert second.returncode == 2, second.stderr
                assert f"in use by another calstream daemon (pid {first.pid} on" in \
                    second.stderr
            else:
                assert started is None, "the daemon runs beside the one holding its work dir"
                assert first.wait(timeout=120) == 2
                assert f"in use by another calstream daemon (pid {holder.pid} on" in \
                    first.stderr.read()
                assert not (work / "deployment.json").exists()  # refused before writing
        finally:
            for proc in (first, holder):
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM if proc is first else signal.SIGKILL)
                    proc.wait(timeout=60)
