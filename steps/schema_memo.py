"""A worker parses each datamodel schema once, not on every attribute it sets.

Why: stdatamodels validates every value a step assigns to a model
(``validate_on_assignment``). Each validation builds a fresh asdf
``RefResolver`` whose ``$ref`` handler re-reads and re-parses the referenced
schema's YAML from asdf's resource manager, with no cache between
validations. A detector1 run sets about 900 values and so parses about 300
schemas: measured in one warm process (bench/README.md, session 10), 0.8 s
of a 10.4 s full-frame run and about a third of a SUB160 run, all of it
the same YAML parsed again.

``remember_parsed_schemas`` puts a memo in front of that parse: the first
parse of a schema is kept and handed to every later resolution. What is
validated, and how, is unchanged: the same documents, parsed by the same
loader, reach the same validator; only the repetition goes. asdf already
shares parsed schemas this way in its own ``_load_schema_cached``; the
resolver's handler merely does not use it. The validators read a resolved
schema, they never write it (tests/unit/test_schema_memo.py checks a run's
schemas are the bytes parsed afresh afterwards).

The memo belongs to one resource manager: asdf builds a new one when
extensions or resource mappings are added, and the memo starts empty with
it, so a schema is never served from a set of resources that no longer
applies.

It replaces a private asdf function (``asdf.schema._make_schema_loader``).
If asdf no longer has it, nothing is replaced and validation runs as asdf
ships it: slower, never different. The test fails then, so an upgrade says
so.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_memo: _Memo | None = None  # this process's, once installed


def remember_parsed_schemas() -> bool:
    """Memoise asdf's schema loader in this process; True if it is in place.

    Idempotent. Call it before the worker freezes its heap (worker_warmup),
    so that the memo itself joins what the garbage collector skips.
    """
    global _memo
    with _lock:
        if _memo is not None:
            return True
        try:
            import asdf.schema as asdf_schema
            from asdf.config import get_config
        except ImportError:
            return False
        make_loader = getattr(asdf_schema, "_make_schema_loader", None)
        if make_loader is None:
            return False
        memo = _Memo(get_config, make_loader)

        def make_remembering_loader():
            return memo.wrap(make_loader())

        asdf_schema._make_schema_loader = make_remembering_loader
        _memo = memo
        return True


class _Memo:
    """Parsed schemas of one resource manager, by URL."""

    def __init__(self, get_config, make_loader) -> None:
        self._get_config = get_config
        self.make_loader = make_loader  # asdf's own, for a fresh parse
        self._manager = None
        self._parsed: dict = {}
        self._lock = threading.Lock()

    def wrap(self, load):
        def load_schema(url):
            manager = self._get_config().resource_manager
            key = str(url)
            with self._lock:
                if manager is not self._manager:  # new extensions: start again
                    self._manager, self._parsed = manager, {}
                found = self._parsed.get(key)
            if found is None:
                found = load(url)  # (schema, uri); raises as asdf does if missing
                with self._lock:
                    if manager is self._manager:
                        self._parsed[key] = found
            return found

        return load_schema

    def entries(self) -> dict:
        with self._lock:
            return dict(self._parsed)


def remembered() -> dict:
    """The memo's schemas by URL, as (schema, uri); empty if not installed."""
    return _memo.entries() if _memo is not None else {}


def parse_afresh(url: str):
    """``url``'s schema parsed now by asdf's own loader, past the memo."""
    if _memo is None:
        raise RuntimeError("the schema memo is not installed")
    return _memo.make_loader()(url)
