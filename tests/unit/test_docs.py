"""Documentation generated from code stays true to it."""

from pathlib import Path

from calstream.steps.routing import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_routing_page_is_the_routing_table():
    page = (ROOT / "docs" / "routing.md").read_text()
    assert markdown_table() in page, "docs/routing.md is stale: regenerate it (see its header)"
