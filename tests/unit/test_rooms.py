"""The rooms rule: steps/ never imports Kafka, topics/ imports neither of the
others, and the daemon never imports jwst (only its workers do, through steps)."""

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


RULES = {
    "steps": ("aiokafka", "kafka", "confluent_kafka", "calstream.daemon"),
    "topics": ("aiokafka", "kafka", "calstream.daemon", "calstream.steps", "jwst"),
    "daemon": ("jwst", "stcal", "stdatamodels", "stpipe"),
}


@pytest.mark.parametrize("room", sorted(RULES))
def test_room_imports(room):
    files = list((ROOT / room).rglob("*.py"))
    assert files
    violations = []
    for f in files:
        for name in imports(f):
            if name.startswith(".."):
                violations.append(f"{f.relative_to(ROOT)}: relative import {name} leaves the room")
            if any(name == bad or name.startswith(bad + ".") for bad in RULES[room]):
                violations.append(f"{f.relative_to(ROOT)} imports {name}")
    assert not violations, "\n".join(violations)
