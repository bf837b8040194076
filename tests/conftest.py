"""Shared fixtures: one real embedded broker and one synthetic kit per session.

Tests isolate themselves with their own topic prefix and directories, so they
share the (cheap to keep, slow to rebuild) broker and reference files.
"""

import logging
import os
from pathlib import Path

import pytest

from calstream.daemon.doers.embedded_broker import EmbeddedBroker
from calstream.steps.environment import environ


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b.bootstrap


@pytest.fixture(scope="session")
def kit(tmp_path_factory):
    """Synthetic NIRCam program + reference files + offline CRDS cache, with the
    CRDS environment set for the session (and restored after)."""
    from calstream.steps.synthetic.kit import build_kit
    from calstream.steps.synthetic.program import ProgramSpec

    root = tmp_path_factory.mktemp("kit")
    k = build_kit(root, ProgramSpec(), seed=7)
    with environ(k.crds_env):
        yield k


@pytest.fixture(autouse=True)
def _logs_restored():
    """Commands run in-process (cli main) set up the daemon's logs on the
    stderr of their moment (a test's capture, closed after it): the root
    logger is put back after every test, or the next test's log lines go
    to a closed file ("--- Logging error ---" in its output)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def unique_prefix(request):
    return f"t{os.getpid()}-{request.node.name[:40]}."


ROOT = Path(__file__).resolve().parents[1]

# The longest integration files (each file's summed test phases, `pytest
# --durations=0`, session 40; test_start_heal ahead of test_recovery since
# session 45, 61-79 s against 50-57), longest first. `make test` runs whole files on
# pytest-xdist workers in collection order (--dist loadfile
# --no-loadscope-reorder): starting the long ones first lets the short ones
# fill in at the end, so the workers finish together. A file not listed runs
# after these, in its usual place; the unit tests come last.
LONGEST_FIRST = (
    "test_fidelity.py", "test_stage3.py", "test_replay.py", "test_wfss.py",
    "test_start_heal.py", "test_recovery.py", "test_hostile_inputs.py",
    "test_planner_parking.py", "test_store_moved.py", "test_holds.py", "test_new_modes.py",
    "test_stage2.py", "test_forged_planner_records.py", "test_product_event_recovery.py",
    "test_dead_letter_recovery.py", "test_archived_inputs.py", "test_daemon.py",
    "test_parking.py", "test_wedged_broker.py", "test_subscribe.py",
)


def _run_order(item) -> tuple[int, int]:
    name = item.path.name
    rank = LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    return rank, "unit" in item.path.parts


def pytest_collection_modifyitems(items):
    items.sort(key=_run_order)  # stable: a file's tests keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test's captured output in UTF-8 whatever it held. Tests of file names
    that are not UTF-8 log them (Python's surrogate escapes: calstream's own
    formatters escape them, pytest's capture does not), and pytest-xdist
    cannot send a report holding a surrogate from its worker: the whole run
    stopped with an INTERNALERROR."""
    outcome = yield
    report = outcome.get_result()
    report.sections = [(title, _utf8(text)) for title, text in report.sections]
    if isinstance(report.longrepr, str):
        report.longrepr = _utf8(report.longrepr)


def _utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
