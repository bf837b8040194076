"""The rooms rule, and the rooms inside the daemon.

steps/ never imports Kafka, topics/ imports neither of the others, and the
daemon never imports jwst (only its workers do, through steps). Inside the
daemon: the deciders are pure (no I/O, no Kafka, no doers), and aiokafka is
imported by one adapter package only, daemon/doers/kafka/.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            names.add("." * node.level + (node.module or ""))
    return names


def _is(name: str, modules) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in modules)


KAFKA = ("aiokafka", "kafka", "confluent_kafka")
JWST = ("jwst", "stcal", "stdatamodels", "stpipe")
# What a decider may not touch: effects (files, sockets, processes, clocks of an
# event loop, metrics) and the rooms that have them.
IO = ("anyio", "asyncio", "socket", "sqlite3", "subprocess", "shutil", "tempfile", "threading",
      "multiprocessing", "select", "signal", "ssl", "urllib", "http", "watchdog",
      "prometheus_client", "calstream.daemon.doers", "calstream.daemon.operations",
      "calstream.daemon.runtime", "calstream.daemon.roles")

RULES = {
    "steps": (*KAFKA, "calstream.daemon"),
    "topics": (*KAFKA, *JWST, "calstream.daemon", "calstream.steps"),
    "daemon": JWST,
    "daemon/deciders": (*KAFKA, *IO),
}


def _files(room: str) -> list[Path]:
    files = list((ROOT / room).rglob("*.py"))
    assert files, room
    return files


@pytest.mark.parametrize("room", sorted(RULES))
def test_room_imports(room):
    violations = []
    for f in _files(room):
        for name in imports(f):
            if name.startswith(".."):
                violations.append(f"{f.relative_to(ROOT)}: relative import {name} leaves the room")
            if _is(name, RULES[room]):
                violations.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)


def test_aiokafka_is_imported_only_by_the_kafka_adapter():
    adapter = ROOT / "daemon" / "doers" / "kafka"
    violations = [f"{f.relative_to(ROOT)} imports {name}"
                  for room in ("daemon", "steps", "topics") for f in _files(room)
                  if adapter not in f.parents
                  for name in imports(f) if _is(name, KAFKA)]
    assert not violations, "\n".join(violations)


def test_jwst_is_imported_only_by_the_steps():
    """The jwst adapters are steps/; calstream's other source never imports jwst."""
    violations = [f"{f.relative_to(ROOT)} imports {name}"
                  for room in ("daemon", "topics", "bench") for f in _files(room)
                  for name in imports(f) if _is(name, JWST)]
    assert not violations, "\n".join(violations)


MAX_MODULE_LINES = 400  # the project's rule: a module does one job, small enough to read


@pytest.mark.parametrize("room", sorted(RULES))
def test_modules_stay_small(room):
    big = {str(f.relative_to(ROOT)): n for f in (ROOT / room).rglob("*.py")
           if (n := len(f.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_every_package_is_installed():
    """A package missing from pyproject.toml imports from a source tree (an
    editable install finds it) but is absent from a built wheel."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {Path(d) for d in setup["package-dir"].values()}
    assert set(setup["packages"]) == set(setup["package-dir"])
    on_disk = {init.parent.relative_to(ROOT) for room in RULES
               for init in (ROOT / room).rglob("__init__.py")}
    assert on_disk == listed, f"not in pyproject.toml: {on_disk - listed}"
