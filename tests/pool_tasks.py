"""Functions the worker-pool tests run in real worker processes."""

import os
import time


def add(a, b):
    return {"sum": a + b, "pid": os.getpid()}


def fail(kind):
    if kind == "value":
        raise ValueError("bad input value")
    raise OSError("disk hiccup")


def crash():
    os._exit(3)


def sleep(seconds):
    time.sleep(seconds)
    return seconds


def classify(exc, task, log_path=None):
    return "transient" if isinstance(exc, OSError) else "permanent"


def chatty(message):
    import logging

    logging.getLogger("some.pipeline").info(message)
    return message


def warns_again_and_again(message, times):
    """As a pipeline may for each of a forged file's extensions or pixels."""
    import logging

    for i in range(times):
        logging.getLogger("some.pipeline").warning("%s %d", message, i)
    return message


def prints_a_traceback(message):
    """As crds does for a reference its cache lacks: traceback.print_exc()."""
    import sys
    import traceback

    try:
        raise FileNotFoundError(message)
    except FileNotFoundError:
        traceback.print_exc()
    print(f"stdout: {message}")
    print(f"stderr: {message}", file=sys.stderr)
    return message


def rendezvous(directory, me, other, timeout=120):
    """Arrive, then wait until ``other`` has arrived too: both return only if
    they were running at the same time (a pool running them one after the
    other makes the first time out), whatever the machine's load."""
    open(os.path.join(directory, me), "w").close()
    deadline = time.time() + timeout
    while not os.path.exists(os.path.join(directory, other)):
        if time.time() > deadline:
            return {"pid": os.getpid(), "met": False}
        time.sleep(0.02)
    return {"pid": os.getpid(), "met": True}


def env(name):
    return {"value": os.environ.get(name), "pid": os.getpid()}


_KEPT = []


def hoard(mb):
    """Keep `mb` MiB resident after the task, as a leaky run would."""
    _KEPT.append(b"\x01" * (mb << 20))
    return {"pid": os.getpid()}


def churn(mb):
    """Allocate `mb` MiB, touch it and free it, as a calibration step does with
    its arrays; report what the worker holds now."""
    from calstream.steps.worker_memory import kept_free_bytes

    block = bytearray(mb << 20)  # zero-filled: every page touched
    del block
    return {"pid": os.getpid(), "resident": _resident(), "kept_free": kept_free_bytes()}


def _resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_for_file(path, timeout=60):
    """Hold the worker until `path` exists (a test opens the gate)."""
    deadline = time.time() + timeout
    while not os.path.exists(path) and time.time() < deadline:
        time.sleep(0.02)
    return {"pid": os.getpid()}


def write_rate(output_dir, name):
    """A stand-in calibration: one product file in `output_dir`."""
    out = os.path.join(output_dir, f"{name}_rate.fits")
    with open(out, "wb") as f:
        f.write(b"SIMPLE" + os.urandom(16))
    return {"outputs": [out], "jwst_version": "3.0.0", "crds_context": "jwst_0001.pmap",
            "duration_seconds": 0.1}


def write_rate_image(output_dir, name):
    """A stand-in calibration whose product is a real (small) image: its
    previews can be drawn."""
    import numpy as np
    from astropy.io import fits

    out = os.path.join(output_dir, f"{name}_rate.fits")
    sci = np.random.default_rng(3).normal(10.0, 1.0, (32, 32)).astype(np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(sci, name="SCI")]).writeto(out)
    return {"outputs": [out], "jwst_version": "3.0.0", "crds_context": "jwst_0001.pmap",
            "duration_seconds": 0.1}


def start_child_and_hang(pid_file, cores=1):
    """Start a multiprocessing child the way stcal does (spawn context), note
    its pid, then hang: a daemonic worker could not start it at all."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,))
    child.start()
    with open(pid_file, "w") as f:
        f.write(str(child.pid))
    time.sleep(600)


def cores_given(cores=1):
    return {"cores": cores, "pid": os.getpid()}


_LOCKS = []


def hold_a_named_lock():
    """What crds's import does in a worker: a multiprocessing lock, named
    under the spawn start method, registered with the resource tracker."""
    import multiprocessing

    _LOCKS.append(multiprocessing.Lock())
    assert _LOCKS[0]._semlock.name  # named: what a killed worker would leak


def hold_a_named_lock_then_warm_up_slowly():
    hold_a_named_lock()
    time.sleep(30)  # as importing jwst takes a while: closed before it is done


def burn(seconds: float, then_fail: bool = False) -> dict:
    """Work the CPU until this process has used ``seconds`` more of it."""
    until = time.process_time() + seconds
    while time.process_time() < until:
        pass
    if then_fail:
        raise ValueError("bad input after burning")
    return {"burned": seconds}


def disk_full(output_dir, name):
    """A run whose products meet a full disk (ENOSPC names no path)."""
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def classify_disk(exc, task, log_path=None):
    import errno

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "infrastructure:disk_full"
    return "permanent"


def short_flood_windows():
    """A worker initializer: flood windows of 2 s, so that a test sees one
    end while the worker waits for its next task."""
    from calstream.daemon.operations import logs

    for flood in logs.flood_controls():
        flood.windows.window = 2.0


def origin():
    """Where this worker came from, and what it found done on arriving."""
    import gc
    import sys

    with open(f"/proc/{os.getppid()}/stat") as f:
        parent_threads = int(f.read().rsplit(")", 1)[1].split()[17])
    return {"pid": os.getpid(), "ppid": os.getppid(), "parent_threads": parent_threads,
            "jwst_imported": "jwst.pipeline" in sys.modules, "frozen": gc.get_freeze_count()}


def wait_for_file_making(output_dir, path, timeout=60):
    """``wait_for_file`` as a run's task (the runner passes its output_dir)."""
    return wait_for_file(path, timeout)


def server_lost_then_crash_then_rate(counter, output_dir, name):
    """Attempt 1 takes the worker server down (the worker dies with it),
    attempt 2's worker dies by itself, attempt 3 makes its product."""
    import signal

    runs = int(open(counter).read()) if os.path.exists(counter) else 0
    with open(counter, "w") as f:
        f.write(str(runs + 1))
    if runs == 0:
        os.kill(os.getppid(), signal.SIGKILL)  # the server: PDEATHSIG takes this worker
        time.sleep(60)
    if runs == 1:
        os._exit(3)
    return write_rate(output_dir, name)


def write_rate_with_a_long_parameter(output_dir, name, length):
    """``write_rate``, its run passed a parameter ``length`` characters long:
    a product event that size cannot be sent (contract.MAX_MESSAGE_BYTES)."""
    return {**write_rate(output_dir, name), "steps": {"jump": {"note": "x" * length}}}


def returns_a_result_of_the_wrong_shape(output_dir, name, shape):
    """``write_rate`` whose answer is not what a task returns: a broken or
    hostile task (what the runner is given is not to be trusted either)."""
    good = write_rate(output_dir, name)
    return {"not_a_dict": [good["outputs"]],
            "no_outputs": {k: v for k, v in good.items() if k != "outputs"},
            "outputs_not_a_list": {**good, "outputs": good["outputs"][0]},
            "no_jwst_version": {k: v for k, v in good.items() if k != "jwst_version"},
            "duration_not_a_number": {**good, "duration_seconds": "soon"}}[shape]


def lists_an_output_elsewhere(output_dir, name, elsewhere):
    """``write_rate``, and it lists a file outside its output_dir as well."""
    with open(elsewhere, "wb") as f:
        f.write(b"SIMPLE not ours")
    good = write_rate(output_dir, name)
    return {**good, "outputs": [*good["outputs"], elsewhere]}


def links_an_output(output_dir, name, target, listed=True):
    """``write_rate``, and a symbolic link to ``target`` beside its product,
    listed among its outputs or not."""
    good = write_rate(output_dir, name)
    link = os.path.join(output_dir, f"{name}_cal.fits")
    os.symlink(target, link)
    return {**good, "outputs": [*good["outputs"], link] if listed else good["outputs"]}


def _refuse_to_load(why):
    raise ValueError(why)


class _Unreadable:
    """Pickled by the worker, refused when the daemon unpickles it: as an
    object of a class only the worker can make would be."""

    def __reduce__(self):
        return _refuse_to_load, ("an object the daemon cannot rebuild",)


def returns_an_unreadable_answer(output_dir, name):
    return {**write_rate(output_dir, name), "extra": _Unreadable()}


def writes_beside(output_dir, name, other, content):
    """``write_rate``, and an unlisted file under another exposure's product
    name (``other``) beside it, as a task that leaves more than it lists may."""
    with open(os.path.join(output_dir, other), "wb") as f:
        f.write(content)
    return write_rate(output_dir, name)


def scratch_removed_once(counter, output_dir, name):
    """``write_rate``, whose scratch directory is removed under its first run
    once the product is written (an operator's clean-up, a full ``rm``)."""
    import shutil

    runs = int(open(counter).read()) if os.path.exists(counter) else 0
    with open(counter, "w") as f:
        f.write(str(runs + 1))
    result = write_rate(output_dir, name)
    if runs == 0:
        shutil.rmtree(output_dir)
    return result


def crds_fatal(crds_path):
    """crds's fatal exit, as a run meets it with a cache that has no
    configuration and no server (CRDS_PATH not mounted, emptied)."""
    os.environ.update(CRDS_PATH=crds_path,
                      CRDS_SERVER_URL="https://jwst-serverless-mode.stsci.edu")
    from calstream.steps.crds_env import refresh_crds

    refresh_crds(force=True)
    from crds.core import heavy_client

    heavy_client.load_server_info("jwst")


def hold_memory(mb, seconds, output_dir=None):
    """Take `mb` MiB (every page touched) and hold it `seconds`, as a run of
    a forged NINTS x NGROUPS does on its way to more."""
    block = bytearray(mb << 20)
    time.sleep(seconds)
    return {"pid": os.getpid(), "held": len(block)}


def child_holds_memory(mb, cores=1, seconds=None):
    """A run given several cores: the memory is its child's (stcal's pool
    processes), which leaves once this worker is gone (or after ``seconds``)."""
    import subprocess
    import sys

    hold = repr(float("inf") if seconds is None else float(seconds))
    code = ("import os, time\n"
            f"block = bytearray({mb} << 20)\n"
            f"end = time.monotonic() + float({hold!r})\n"
            f"while os.getppid() == {os.getpid()} and time.monotonic() < end:\n"
            "    time.sleep(0.05)\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    return {"exit": child.wait()}


def mark_then_wait(mark, gate, output_dir=None, timeout=60):
    """Say the run began (``mark`` made), then hold the worker until ``gate``
    exists (``output_dir``: a runner's, unused)."""
    open(mark, "w").close()
    return wait_for_file(gate, timeout)
