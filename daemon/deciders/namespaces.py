"""What a namespace may be called: the live products' name, and the rule for a
reprocessing's own (it becomes a directory beside the live tree)."""

from __future__ import annotations

import re

LIVE = "live"
# Names the product store's top directory already uses for itself.
NAMESPACES = "namespaces"
CURRENT = "current"
PROMOTIONS = "promotions"
# Program directories are five digits, so these names never collide with one.
# Matched whole (fullmatch: "$" alone lets a final newline through).
_NAMESPACE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class BadNamespace(ValueError):
    pass


def check_namespace(namespace: str, *, allow_live: bool = True) -> str:
    if namespace == LIVE:
        if not allow_live:
            raise BadNamespace('namespace "live" is the live products: a reprocessing needs '
                               "a namespace of its own (e.g. ctx1535-2026-11)")
        return namespace
    if not _NAMESPACE.fullmatch(namespace) or namespace in (CURRENT, NAMESPACES, PROMOTIONS):
        raise BadNamespace(f"bad namespace {namespace!r}: lower-case letters, digits, '.', '_' "
                           "and '-', at most 63 characters, not 'current'")
    return namespace
