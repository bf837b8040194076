"""The names of a ledger's files: ``<key>.json``, where the key is a plan
id or an exposure id (the planner's, doers/planner_ledger.py) or a dead
letter's event id (doers/dead_letter_ledger.py).

The ledger's directory is untrusted like its files: a person's copy
(``x.json.bak``, ``x (1).json``), an editor's swap file or a name made to
mislead (a newline in it) is no record the planner wrote. Only a name the
ledger could have written is read; a key it could not write under is
refused before it becomes a file name (a "/" would leave the directory).
"""

from __future__ import annotations

import re

SUFFIX = ".json"
# Plan ids are sha256 digests, exposure ids "jw..." (topics/schemas); a
# few more characters for what older versions kept. Bounded so that the
# temporary name of a write (".<key>.json.<pid>.tmp") fits in 255 bytes.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,229}")


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot name a ledger file, or None."""
    if not isinstance(key, str):
        return f"a key of type {type(key).__name__}, not text"
    if not _KEY.fullmatch(key):
        return (f"the key {key[:300]!r} is not a ledger key (a letter or digit, then letters, "
                "digits, '_', '.', '+' or '-', at most 230)")
    return None


def file_name(key: str) -> str:
    """The file name a record keyed ``key`` is kept under (``key_problem`` None)."""
    return f"{key}{SUFFIX}"


def key_of(name: str) -> str | None:
    """The key of a ledger file named ``name``, or None when no record the
    ledger writes has that name."""
    if not name.endswith(SUFFIX):
        return None
    key = name[:-len(SUFFIX)]
    return key if key_problem(key) is None else None


STRAYS_NAMED = 5  # names a stray warning shows; the rest are counted


def strays_summary(directory: str, strays: list[str], what: str = "planner ledger") -> str:
    """One warning's text for the stray names of a ledger directory: a few
    of them and how many, where a line each flooded the log at every start
    of a directory holding thousands."""
    shown = ", ".join(repr(name) for name in strays[:STRAYS_NAMED])
    more = f" and {len(strays) - STRAYS_NAMED} more" if len(strays) > STRAYS_NAMED else ""
    return (f"{what}: {len(strays)} name(s) in {directory!r} not named <key>.json for a "
            f"valid key: skipped, not read: {shown}{more}")
