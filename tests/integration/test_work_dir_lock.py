"""One daemon per work directory (daemon/doers/work_dir_lock.py): a second
``calstream run`` or ``calstream demo`` on a directory a daemon holds
refuses to start, and a daemon killed with -9 leaves nothing held."""

from __future__ import annotations

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
