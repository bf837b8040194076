"""Is a schema-valid event possible? The checks behind the trust boundary.

The JSON Schema says what an event looks like; it cannot say that a product
event with no inputs, outputs outside the product store, or a namespace its
inputs do not belong to is impossible. The planner would otherwise crash on
such an event (``inputs[0]`` of an empty list), hand ``/etc/passwd`` to a
stage-2 association, or mix a forged namespace into the live products. Each
problem found here becomes a dead letter; the deciders behind this check may
assume what it checked.

Pure: paths are judged as text (``PurePosixPath``), never looked up.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

from calstream.daemon.deciders.admission import is_version, path_text_problem
from calstream.daemon.stages import arrival_product_stages
from calstream.steps.exposure import header_copy_problems
from calstream.steps.keyword_memo import same_scalars
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.topics.canonical_json import canonical_json, canonical_json_of_parsed
from calstream.topics.contract import MAX_INTEGER_DIGITS

PER_EXPOSURE_STAGES = ("detector1", "stage2", "dark", "guider")
# Made from an uncal file: their pointing_quality is that file's ENGQLPTG (a
# stage-2 product's may be a correction's).
_FROM_A_FILE = frozenset(arrival_product_stages())


def _plain(path: str) -> bool:
    # Absolute, no empty, "." or ".." part: its text is its parts.
    return path.startswith("/") and "//" not in path and "/." not in path \
        and not path.endswith("/.")


def inside(path: str, roots: Iterable[str | PurePosixPath]) -> bool:
    """``path`` is absolute, has no ``..`` and lies below one of ``roots``."""
    roots = [str(r) for r in roots]
    if _plain(path) and all(_plain(r) or r == "/" for r in roots):
        # The common case as text (PurePosixPath costs more than the planner's
        # decision): the same answer, as tests/unit/test_event_checks.py checks.
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)
    return _inside_by_parts(path, roots)


def _inside_by_parts(path: str, roots: list[str]) -> bool:
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        return False
    return any(p.is_relative_to(PurePosixPath(root)) for root in roots)


def _roots(products_root: str, namespace: str, stage: str | None,
           input_roots: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(where outputs must lie, as text; roots of outputs; roots of inputs)."""
    store = PurePosixPath(products_root)
    out_root = store if namespace == "live" else store / "namespaces" / namespace
    # detector1, dark and guider are made from an uncal file in the inbox.
    in_roots = [*input_roots, store] if stage in arrival_product_stages() else [store]
    return str(out_root), (str(out_root),), tuple(str(r) for r in in_roots)


def _below(roots: tuple[str, ...]) -> Callable[[str], bool]:
    """``inside(path, roots)`` for fixed roots, their text worked out once
    (a closure: a third cheaper to call than an object's ``__call__``)."""
    listed = list(roots)
    if not all(_plain(r) or r == "/" for r in roots):
        return lambda path: _inside_by_parts(path, listed)
    exact, prefixes = frozenset(roots), tuple(r.rstrip("/") + "/" for r in roots)

    def below(path: str) -> bool:
        # _plain(path) written out: this runs for every path of every event.
        if path.startswith("/") and "//" not in path and "/." not in path \
                and not path.endswith("/."):
            return path in exact or path.startswith(prefixes)
        return _inside_by_parts(path, listed)
    return below


_JUDGES: dict[tuple, tuple[str, Callable[[str], bool], Callable[[str], bool]]] = {}


def _path_judges(products_root: str, namespace: Any, stage: Any,
                 input_roots: tuple[str, ...]
                 ) -> tuple[str, Callable[[str], bool], Callable[[str], bool]]:
    """(where outputs must lie, as text; the judges of outputs and of inputs),
    remembered (a few per planner) under one key: one look-up per event."""
    key = (products_root, namespace, stage, input_roots)
    try:
        judges = _JUDGES.get(key)
    except TypeError:  # a namespace or stage its schema let through that is no text
        key, judges = None, None
    if judges is None:
        out_root, out_roots, in_roots = _roots(products_root, namespace, stage, input_roots)
        judges = (out_root, _below(out_roots), _below(in_roots))
        if key is not None:
            if len(_JUDGES) >= 256:  # bounded: forged namespaces must not grow it
                _JUDGES.clear()
            _JUDGES[key] = judges
    return judges


def product_event_problems(event: Mapping[str, Any], *, products_root: str,
                           input_roots: Iterable[str]) -> list[str]:
    """Why a product event (valid by its schema) cannot be true; empty if none.

    ``products_root`` is where every output must lie (a namespace's outputs in
    its own tree); ``input_roots`` where a detector1 input (an uncal file)
    may come from.
    """
    problems: list[str] = []
    stage = event.get("stage")
    namespace = event.get("namespace", "live")
    replay = event.get("replay")
    inputs, outputs = event.get("inputs") or [], event.get("outputs") or []
    if not inputs:
        problems.append("no inputs: every product is made from something")
    if event.get("outcome") == "success" and not outputs:
        problems.append("a successful run with no outputs")
    if not is_version(event.get("version", 1)):  # the next order's version is one more
        problems.append(f"version {str(event.get('version'))[:40]} is not a whole number of "
                        f"1 to {MAX_INTEGER_DIGITS} digits")

    if type(input_roots) is not tuple:
        input_roots = tuple(str(r) for r in input_roots)
    out_root, out_below, in_below = _path_judges(str(products_root), namespace, stage,
                                                 input_roots)
    for o in outputs:
        if not out_below(str(o.get("path", ""))):
            problems.append(f"output {str(o.get('path'))[:200]!r} is outside {out_root}")
        elif unusable := path_text_problem(str(o.get("path"))):
            problems.append(f"output: {unusable}")  # the next stage could not look it up
    for i in inputs:
        if not in_below(str(i.get("path", ""))):
            problems.append(f"input {str(i.get('path'))[:200]!r} is outside the roots")
        elif unusable := path_text_problem(str(i.get("path"))):
            problems.append(f"input: {unusable}")

    if namespace != "live":
        if not isinstance(replay, Mapping) or replay.get("namespace") != namespace:
            problems.append(f"namespace {namespace!r} without a replay into it")
    elif replay:
        problems.append("a replay's event in the live namespace")

    name = str(event.get("product_name", ""))
    if stage in PER_EXPOSURE_STAGES:
        if event.get("exposure_id") != name:
            problems.append(f"exposure_id {event.get('exposure_id')!r} is not product_name "
                            f"{name!r}")
        try:
            parsed = parse_exposure_name(name)
        except BadName as exc:
            problems.append(str(exc))
        else:
            if event.get("program") != parsed.program:  # each written out: no tuples made
                problems.append(f"program {event.get('program')!r} but the name says "
                                f"{parsed.program!r}")
            if event.get("observation") != parsed.observation:
                problems.append(f"observation {event.get('observation')!r} but the name says "
                                f"{parsed.observation!r}")
            if event.get("outcome") == "success":
                problems += _decided_on_problems(name, parsed, event.get("header"), outputs)
                if stage in _FROM_A_FILE and type(event.get("header")) is dict \
                        and event.get("pointing_quality") != str(
                            event["header"].get("ENGQLPTG", "UNKNOWN")):
                    # The hold reads pointing_quality; the file's header
                    # (copied here as read at the door) is what it stands for.
                    problems.append(
                        f"pointing_quality {str(event.get('pointing_quality'))[:40]!r} but the "
                        f"header says ENGQLPTG = {str(event['header'].get('ENGQLPTG'))[:40]!r}")
    elif stage == "stage3" and not name.startswith(f"jw{event.get('program')}-"):
        problems.append(f"level-3 product {name!r} is not program {event.get('program')!r}'s")
    return problems


def _decided_on_problems(name_text: str, name, header: Any, outputs: list) -> list[str]:
    """What the planner reads of a successful exposure's event: its header
    (routing, completeness, association names) and its outputs' suffixes.
    Judged here by the rules a file meets at the door, so that a forged
    event is refused with a reason rather than failing the decisions of its
    whole visit later (steps/exposure.py, header_copy_problems)."""
    if type(header) is not dict:
        return ["a successful exposure's event without the exposure's header"]
    problems = _header_problems(name_text, name, header)
    unnamed = [str(o.get("path"))[:200] for o in outputs if type(o.get("suffix")) is not str]
    if unnamed:
        problems.append(f"output(s) without a suffix: {', '.join(unnamed[:3])}")
    return problems


# Exposure name -> the last header copy judged to have no problem under that
# name (header_copy_problems depends on nothing else). An exposure's
# stage-2 event carries its detector1 event's header again: an identical
# copy (same_scalars: the same keywords, types and values) has the same
# judgement, so the per-keyword rules run once an exposure, not once an
# event (bench/README.md, session 44). The headers kept are the events' own
# (never changed once decoded), which the planner keeps anyway while it
# holds their events; bounded to the most recent names (a stage-2 event
# comes a stage-2 run after its detector1 event), so that a planner that
# compacted (deciders/planner_memory.py) keeps at most ~16 MB of them.
_CLEAN_COPIES: OrderedDict[str, dict[str, Any]] = OrderedDict()
CLEAN_COPIES_KEPT = 4096


def _header_problems(name_text: str, name, header: dict[str, Any]) -> list[str]:
    """``header_copy_problems(name, header)``, an identical clean copy's answer kept."""
    kept = _CLEAN_COPIES.get(name_text)
    if kept is not None and same_scalars(kept, header):
        return []
    problems = header_copy_problems(name, header)
    if not problems:
        _CLEAN_COPIES[name_text] = header
        if len(_CLEAN_COPIES) > CLEAN_COPIES_KEPT:
            _CLEAN_COPIES.popitem(last=False)  # the oldest name
    return problems


def share_clean_header(body: dict[str, Any]) -> None:
    """Put in ``body`` (an event just decoded, nobody else's yet) the header
    kept for its exposure in place of an identical copy: the planner then
    keeps one header an exposure, not one an event (a stage-2 event's is its
    detector1 event's again: 2.5 kB of the 18.7 kB an exposure took,
    bench/README.md, session 44), as a restored snapshot
    already does (restored_records.SHARED). Identical (same_scalars): every
    check, digest and text of the event is the same as with its own copy."""
    header, name = body.get("header"), body.get("product_name")
    if type(header) is dict and type(name) is str:
        kept = _CLEAN_COPIES.get(name)
        if kept is not None and kept is not header and same_scalars(kept, header):
            body["header"] = kept


class EventIds:
    """The content each recent event id stood for: one id, one content.

    A subscriber deduplicates on event ids, so an id reused for other
    content would make it drop a real event (or keep a forged one). The
    memory is bounded (the most recent ``capacity`` ids, 16 bytes of digest
    each): a forger reusing an id older than that is caught by nothing here,
    but by then every subscriber has long processed the original.
    """

    def __init__(self, capacity: int = 200_000):
        self.capacity = capacity
        self._digests: OrderedDict[str, bytes] = OrderedDict()

    def consistent(self, event_id: str, body: Mapping[str, Any]) -> bool:
        """Remember ``body`` under ``event_id``; False if the id meant other content."""
        return self.consistent_digest(event_id, content_digest(body))

    def known(self, event_id: str) -> bytes | None:
        """The content digest remembered under ``event_id``, None if none is."""
        return self._digests.get(event_id)

    def __len__(self) -> int:
        return len(self._digests)

    def consistent_digest(self, event_id: str, digest: bytes) -> bool:
        """``consistent`` for a content digest already taken (``content_digest``)."""
        known = self._digests.get(event_id)
        if known is not None:
            self._digests.move_to_end(event_id)
            return known == digest
        self._digests[event_id] = digest
        if len(self._digests) > self.capacity:
            self._digests.popitem(last=False)
        return True


_VOLATILE = frozenset({"emitted_at", "producer", "previews"})  # may differ in a re-emission


def content_digest(body: Mapping[str, Any], *, parsed: bool = False) -> bytes:
    """What an event says, apart from when and by whom it was emitted: 16 bytes.

    ``parsed``: ``body`` is as ``contract.parse_json`` returned it (only
    JSON's own types), so its text needs no walk over its items: the same
    digest, for a fifth of the cost.
    """
    content = dict(body)  # a copy and three pops: a third of a comprehension's cost
    for key in _VOLATILE:
        content.pop(key, None)
    text = canonical_json_of_parsed(content) if parsed else canonical_json(content)
    return hashlib.blake2b(text, digest_size=16).digest()
