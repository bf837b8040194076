"""The product store moved: paths of its history read under its new root.

An operator whose store's disk fails copies the store (``rsync -a``) to a
new disk and restarts with ``products = NEW`` and ``products_moved_from =
["OLD"]``. The topics' history -- product events, the orders sent from them,
dead letters redriven, a planner snapshot -- names files under OLD, and is
never rewritten (a topic is history). So wherever such a path is judged or
opened, it is read as the same relative path under the current root: here,
once. A path under no earlier root is left as it is, and is judged as before
(outside the store: refused). The files are still judged by their own bytes:
the digest the event recorded is checked against the file under the new
root by whoever opens it (admission.work_order_staleness and its caller).

Pure: paths are text, never looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from calstream.daemon.deciders.event_checks import inside

# A path in, its reading under the current root out (itself if under no earlier root).
Reroot = Callable[[str], str]


def moved_roots_problem(earlier: Iterable[str], root: str) -> str | None:
    """Why ``earlier`` roots cannot be read under ``root``; None if they can.
    A root inside another (or the current root inside an earlier one) would
    make a path under the new root read as under an old one."""
    earlier = [str(e) for e in earlier]
    for e in earlier:
        if not e.startswith("/") or e == "/":
            return f"products_moved_from: {e!r} is not an absolute directory"
        if inside(root, [e]) or inside(e, [root]):
            return (f"products_moved_from: {e!r} and the product store {root!r} "
                    "lie one inside the other")
        if any(o != e and (inside(o, [e]) or inside(e, [o])) for o in earlier):
            return f"products_moved_from: {e!r} lies inside or around another earlier root"
    return None


def rerooter(earlier: Iterable[str], root: str) -> Reroot | None:
    """The path mapping for a store moved from ``earlier`` roots to ``root``;
    None when it never moved (the caller's common case: nothing to do)."""
    prefixes = tuple(str(e).rstrip("/") + "/" for e in earlier)
    if not prefixes:
        return None
    root = str(root).rstrip("/")

    def reroot(path: str) -> str:
        # Only plain text moves (no "//", "." or ".." part, as event_checks
        # reads plain paths): anything else stays as it is, outside the
        # store, and whoever judges it refuses it.
        if type(path) is str and path.startswith(prefixes) and "//" not in path \
                and "/." not in path:
            for prefix in prefixes:
                if path.startswith(prefix):
                    return root + "/" + path[len(prefix):]
        return path
    return reroot


def _files(files: Any, reroot: Reroot) -> Any:
    if type(files) is not list:
        return files  # the schema or the checks behind it refuse it
    return [{**f, "path": reroot(f["path"])} if type(f) is dict and "path" in f else f
            for f in files]


def rerooted_event(body: Mapping[str, Any], reroot: Reroot) -> dict[str, Any]:
    """A product event's body with its inputs and outputs read under the current root."""
    return {**body, "inputs": _files(body.get("inputs"), reroot),
            "outputs": _files(body.get("outputs"), reroot)}


def rerooted_order(body: Mapping[str, Any], reroot: Reroot) -> dict[str, Any]:
    """A work order's body with its inputs and its association's members
    (the same files, admission checks) read under the current root."""
    moved = {**body, "inputs": _files(body.get("inputs"), reroot)}
    association = body.get("association")
    if type(association) is dict and type(association.get("products")) is list:
        moved["association"] = {**association, "products": [
            {**p, "members": [{**m, "expname": reroot(m["expname"])}
                              if type(m) is dict and type(m.get("expname")) is str else m
                              for m in p["members"]]}
            if type(p) is dict and type(p.get("members")) is list else p
            for p in association["products"]]}
    return moved


def moved_inputs(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, str]:
    """{path now read: path the record named} of the inputs a rerooting changed."""
    return {a["path"]: b["path"] for b, a in zip(before.get("inputs") or [],
                                                 after.get("inputs") or [], strict=False)
            if type(a) is dict and type(b) is dict and a.get("path") != b.get("path")}


def moved_copy_problem(inputs: list[Mapping[str, Any]], digests: list[str],
                       moved: Mapping[str, str]) -> str | None:
    """Why an order's input read under the new root cannot be used: its bytes
    are not the ones the order recorded (a copy cut short or damaged by the
    failing disk). A data fault, never a stale order dropped in silence: no
    newer product event will come to replace it."""
    for item, digest in zip(inputs, digests, strict=True):
        path = item["path"]
        if path in moved and digest != item["digest"]:
            return (f"input {path[:300]} (named {moved[path][:300]} before the product store "
                    f"moved) does not hold the bytes recorded for it (digest "
                    f"{str(item['digest'])[:20]}..., found {str(digest)[:20]}...): the copy "
                    "differs; copy the file again from the old store and redrive this dead "
                    "letter")
    return None
