"""What a record must satisfy before its stage runs it (pure).

Every stage admits its records the same way (doers/record_admitter.py): the
doer decodes the message and gathers the facts the rules need from the
filesystem and the product store (resolved paths, whether files exist, their
digests, the namespace a product belongs to); these functions decide. A record
is run, dead-lettered (``bad_input``, ``invalid_message``), or found stale: a
file changed since the message was written, and a newer message covers it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calstream.daemon.deciders.namespaces import LIVE, BadNamespace, check_namespace
from calstream.daemon.deciders.order_parameters import steps_problem
from calstream.steps.associations import (
    AssociationInvalid,
    NamingError,
    association_filename,
    validate_level2,
    validate_level3,
)
from calstream.steps.naming import BadName, parse_exposure_name
from calstream.steps.routing_terms import PIPELINE_CLASSES
from calstream.topics.contract import MAX_INTEGER_DIGITS


@dataclass(frozen=True)
class Verdict:
    action: str  # "run" | "dead_letter" | "stale"
    reason: str = ""  # dead letter: why; stale: what changed
    category: str = ""  # dead letter: "bad_input" | "invalid_message"
    fields: dict[str, Any] = field(default_factory=dict)  # dead letter: extra fields


RUN = Verdict("run")


def bad_input(reason: str, **fields: Any) -> Verdict:
    return Verdict("dead_letter", reason, "bad_input", fields)


@dataclass(frozen=True)
class FileFacts:
    """What the filesystem says about one path a message names."""

    path: Path  # as the message has it
    resolved: Path  # symlinks followed
    is_file: bool
    problem: str | None = None  # why the path cannot be looked up at all


@dataclass(frozen=True)
class ExposureFacts:
    """What an uncal file's own primary header says (the watcher's reading),
    or why it cannot be read as an exposure."""

    header: dict[str, Any]
    size: int
    problem: str | None = None


@dataclass(frozen=True)
class Roots:
    """Where inputs may come from: as configured (for messages), and resolved."""

    given: list[Path]
    resolved: list[Path]


def replay_problem(replay: dict) -> str | None:
    """What is wrong with a replay request carried by a message, or None."""
    namespace = replay.get("namespace")
    if not isinstance(namespace, str):
        return "replay request without a namespace"
    try:
        check_namespace(namespace, allow_live=False)
    except BadNamespace as exc:
        return f"replay request: {exc}"
    context = replay.get("crds_context")
    if context is not None and not is_context_name(context):
        return f"replay request: CRDS context {str(context)[:80]!r} is not a .pmap name"
    return None


def is_context_name(context: object) -> bool:
    """A CRDS context's name (jwst_1535.pmap), as a work order's is: what
    `calstream replay` accepts and a stage admits."""
    return isinstance(context, str) and _CONTEXT.fullmatch(context) is not None


# The contract's grammar of a context (a work order's and a product event's
# crds_context): a replay's becomes the run's CRDS_CONTEXT and its product's
# crds_context, so "../../x.pmap" is no name of one.
_CONTEXT = re.compile(r"[a-z0-9_]{1,40}\.pmap")  # matched whole: no final newline either


# Linux's limits (NAME_MAX, PATH_MAX with its final NUL): a longer name is no
# file, and looking it up raises instead of saying "does not exist".
NAME_MAX, PATH_MAX = 255, 4095


def path_text_problem(text: str) -> str | None:
    """Why a message's path cannot name a file at all, or None: judged as
    text before any lookup (a NUL, a surrogate or a name too long made the
    lookup raise, and the record reach the admitter's catch-all)."""
    if "\x00" in text:
        return f"path {shown_path(text)} has a NUL byte"
    if len(text) <= NAME_MAX and text.isascii():  # the common case, at once: no name too long
        return None
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the bytes os.fsencode makes
    except UnicodeEncodeError:
        return f"path {shown_path(text)} is not valid UTF-8 (a lone surrogate)"
    if len(raw) > PATH_MAX:
        return f"path of {len(raw)} bytes is longer than the file system allows ({PATH_MAX})"
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return (f"path {shown_path(text)} has a name of {len(longest)} bytes, longer than "
                f"the file system allows ({NAME_MAX})")
    return None


def shown_path(path: object) -> str:
    """A message's path in a reason: quoted and escaped (a repr), so that a
    newline, an escape sequence or a surrogate in it reaches no log line, no
    terminal and no dead letter reader raw."""
    return repr(str(path)[:200])


def within_roots(resolved: Path, resolved_roots: list[Path]) -> bool:
    """Whether a path lies under one of the roots (both with symlinks followed)."""
    return any(resolved.is_relative_to(root) for root in resolved_roots)


# -- detector1: an arrival -------------------------------------------------
# An arrival is run if it names an existing exposure file under the allowed
# roots, whose content is still the one announced.

def arrival_problem(arrival: dict, file: FileFacts, roots: Roots) -> Verdict | None:
    problem = _arrival_problem(arrival, file, roots)
    if problem is None:
        return None
    return bad_input(problem, exposure_id=arrival["exposure_id"], path=arrival["path"],
                     digest=arrival["digest"])


def arrival_claims_problem(arrival: dict, exposure: ExposureFacts,
                           from_replay_topic: bool) -> Verdict | None:
    """A message never decides what the file says: the arrival's copy of the
    header (and its size) must be the file's own, and replayed work must say
    which replay it belongs to. A forged ``ENGQLPTG = CALCULATED`` for a
    PLANNED file ends here instead of bypassing the pointing hold."""
    fields = dict(exposure_id=arrival["exposure_id"], path=arrival["path"],
                  digest=arrival["digest"])
    if exposure.problem:
        return bad_input(f"the file is not a usable exposure: {exposure.problem}", **fields)
    wrong = [f"{k}: message {v!r}, file {exposure.header.get(k)!r}"
             for k, v in sorted(arrival["header"].items()) if exposure.header.get(k) != v]
    if wrong:
        return Verdict("dead_letter", "the arrival's header copy is not the file's: "
                       + "; ".join(wrong[:5]), "invalid_message", fields)
    if arrival["size"] != exposure.size:
        return Verdict("dead_letter", f"the arrival says {arrival['size']} bytes, the file "
                       f"has {exposure.size}", "invalid_message", fields)
    replayed = from_replay_topic or arrival.get("priority") == "replay" \
        or arrival.get("source") == "replay"
    if replayed and not arrival.get("replay"):
        return Verdict("dead_letter", "replayed work without its replay (namespace, context)",
                       "invalid_message", fields)
    return None


def arrival_staleness(arrival: dict, digest: str) -> Verdict:
    """``digest``: of the file's content now (read only once it is admitted)."""
    if digest != arrival["digest"]:
        # The inbox file was replaced (a corrected redelivery); the new
        # content has an arrival of its own, so this one is stale.
        return Verdict("stale", "file changed since this arrival was announced; "
                                "skipping stale arrival")
    return RUN


def _arrival_problem(arrival: dict, file: FileFacts, roots: Roots) -> str | None:
    try:
        name = parse_exposure_name(arrival["exposure_id"])
        file_name = parse_exposure_name(file.path.name)
    except BadName as exc:
        return str(exc)
    if file.problem:
        return file.problem
    replay = arrival.get("replay")
    if replay:
        problem = replay_problem(replay)
        if problem:
            return problem
    path = file.path
    if not path.is_absolute():
        return f"path {shown_path(path)} is not absolute"
    if not within_roots(file.resolved, roots.resolved):
        return (f"path {shown_path(path)} is outside the allowed roots "
                f"({', '.join(str(r) for r in roots.given)})")
    if not file.is_file:
        return f"input file {shown_path(path)} does not exist (removed from the inbox?)"
    if file_name.exposure_id != name.exposure_id:
        return f"file name {path.name} does not match exposure id {name.exposure_id}"
    return None


# -- stages 2 and 3: a work order -----------------------------------------
# A work order is run on the topic of its own stage, in a namespace it may
# write, if every input is a product of the store with the content planned.

def work_order_problem(order: dict, stage: str, input_namespaces: list[str | None],
                       inputs: list[FileFacts], products: Roots,
                       from_replay_topic: bool = False) -> Verdict | None:
    """``input_namespaces`` and ``inputs`` follow ``order["inputs"]``."""
    if order["stage"] != stage:
        return Verdict("dead_letter", f"a {order['stage']} work order on the {stage} topic",
                       "invalid_message")
    if from_replay_topic and not order.get("replay"):
        return Verdict("dead_letter", "replayed work without its replay (namespace, context)",
                       "invalid_message")
    if not is_version(order.get("version", 1)):
        # Its schema's "integer" takes 1e300, a name of 300 digits for its claim file.
        return bad_input(f"version {str(order.get('version'))[:40]} is not a whole number "
                         f"of 1 to {MAX_INTEGER_DIGITS} digits",
                         exposure_id=order.get("exposure_id"))
    problem = (association_problem(order, stage) or product_problem(order, stage)
               or steps_problem(order) or namespace_problem(order, input_namespaces)
               or _inputs_problem(inputs, products))
    if problem:
        return bad_input(problem, exposure_id=order.get("exposure_id"))
    return None


# The largest whole number a message may carry (its integers are read up to
# these digits); a float's int() is bounded by nothing.
MAX_VERSION = 10**MAX_INTEGER_DIGITS - 1


def is_version(version: Any) -> bool:
    """A product's version: a whole number (2.0 is one, as its schema says)
    in 1..MAX_VERSION; it names claim files and directories."""
    return type(version) in (int, float) and 1 <= version <= MAX_VERSION \
        and version == int(version)


# Names that become file names in the product store: no "/", no leading dot
# (fullmatch: "$" alone lets a final newline through).
_FILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,199}$", re.IGNORECASE)


def association_problem(order: dict, stage: str) -> str | None:
    """The association is what the worker runs: every name in it that makes
    a file name must be a plain name, its members must be the order's own
    inputs (so the input checks cover them), and the pipeline one of jwst's."""
    if order["pipeline"] not in PIPELINE_CLASSES:
        return f"unknown pipeline {order['pipeline'][:80]!r}"
    observation = order.get("observation")
    if observation is not None and not re.fullmatch(r"[0-9]{3}", str(observation)):
        return f"observation {str(observation)[:40]!r} is not 3 digits"
    if order.get("association_path") is not None and not (
            _FILE_NAME.fullmatch(order["association_path"])
            and order["association_path"].endswith("_asn.json")):
        return f"association_path {order['association_path'][:80]!r} is not a plain file name"
    asn = order["association"]
    products = asn.get("products")
    if not isinstance(products, list) or not products:
        return "the association has no products"
    names = [asn.get(k) for k in ("asn_id", "program", "version_id", "asn_type")]
    names += [p.get("name") if isinstance(p, dict) else None for p in products]
    bad = [n for n in names if not (isinstance(n, str) and _FILE_NAME.fullmatch(n))]
    if bad:
        return f"association name(s) that cannot be file names: {', '.join(map(repr, bad))[:200]}"
    inputs = {i.get("path") for i in order.get("inputs", [])}
    for product in products:
        members = product.get("members")
        if not isinstance(members, list) or not members:
            return f"association product {product['name']!r} has no members"
        for m in members:
            name = m.get("expname") if isinstance(m, dict) else m
            if not isinstance(m, dict) or not isinstance(name, str) or name not in inputs:
                return f"association member {str(name)[:200]!r} is not one of the order's inputs"
            if not isinstance(m.get("exptype"), str):  # the product event lists members by it
                return f"association member {name[:200]!r} has no exptype"
    return None


def product_problem(order: dict, stage: str) -> str | None:
    """The files a run writes are named by its association: jwst names a
    stage-2 product after the association's product (``<name>_cal.fits``), a
    level-3 one too, and the association file is written under
    ``association_path``; all of them are moved into the store over whatever
    has that name. So the association must be one the planner could have
    sent for this very product (its own rules, ``validate_level2`` and
    ``validate_level3``): one product, named as the order is, of the order's
    program and observation, a stage-2 one after its one science member,
    the association file under the association's own name. Before, a
    forged stage-2 order of one exposure whose association's product named
    another replaced that other exposure's cal file with its own data.
    Judged once ``association_problem`` found every name a plain one."""
    asn, name = order["association"], order["product_name"]
    try:
        (validate_level2 if stage == "stage2" else validate_level3)(asn)
        expected = association_filename(asn)
    except (AssociationInvalid, NamingError) as exc:
        return f"not an association the planner makes: {str(exc)[:300]}"
    if [p["name"] for p in asn["products"]] != [name]:
        return (f"the association's product(s) {[p['name'] for p in asn['products']]!r:.200} "
                f"are not the order's product {name!r}")
    if asn["program"] != order["program"]:
        return f"association of program {asn['program']!r}, order of {order['program']!r}"
    if order.get("association_path") not in (None, expected):
        return (f"association_path {order['association_path']!r} is not the association's "
                f"name {expected!r}")
    if stage == "stage2":
        # Its product event is the exposure's: the same checks the planner
        # makes of it (event_checks), made before the store is written.
        try:
            exposure = parse_exposure_name(name)
        except BadName as exc:
            return str(exc)
        if order.get("exposure_id") != name:
            return f"exposure_id {str(order.get('exposure_id'))[:80]!r} is not product {name!r}"
        if (order["program"], order.get("observation")) != (exposure.program,
                                                             exposure.observation):
            return (f"program {order['program']!r}, observation "
                    f"{str(order.get('observation'))[:40]!r}, but the product is "
                    f"{exposure.program!r}, {exposure.observation!r}")
    return None


def work_order_staleness(order: dict, digests: list[str]) -> Verdict:
    """``digests``: of the inputs' content now, in order."""
    for item, digest in zip(order.get("inputs", []), digests, strict=True):
        if digest != item["digest"]:
            # A member was recalibrated since the order was planned (e.g. a
            # corrected redelivery): the planner issues a new order for it.
            return Verdict("stale", f"input {Path(item['path']).name} changed since the "
                                    "work order was planned")
    return RUN


def namespace_problem(order: dict, input_namespaces: list[str | None]) -> str | None:
    """A namespace's products are made from live ones or its own, and never
    feed live ones: that is what keeps a reprocessing from touching the live
    products until it is promoted."""
    namespace = order.get("namespace") or LIVE
    if order.get("replay"):
        problem = replay_problem(order["replay"])
        if problem:
            return problem
        if order["replay"]["namespace"] != namespace:
            return (f"work order for namespace {namespace!r} carries a replay into "
                    f"{order['replay']['namespace']!r}")
    elif namespace != LIVE or order.get("priority") == "replay":
        # Every namespace is made by a replay (it names the context and the
        # replay that asked): without one, the order was not the planner's.
        return f"namespace {namespace!r} without a replay into it"
    context = order.get("crds_context")
    if context is not None and context != (order.get("replay") or {}).get("crds_context"):
        # The run takes this context: a live order is run with the daemon's
        # pinned one (the planner names none), a replayed one with its replay's.
        return (f"crds_context {context!r} is not its replay's "
                f"({(order.get('replay') or {}).get('crds_context')!r}): a live order is run "
                "with the daemon's context, a replayed one with its replay's")
    for item, source in zip(order.get("inputs", []), input_namespaces, strict=True):
        if source not in (None, LIVE, namespace):
            return (f"input {shown_path(Path(item['path']).name)} is from namespace {source!r}, "
                    f"but the order is for namespace {namespace!r}: a reprocessed "
                    "namespace never feeds another (or the live products)")
    return None


def _inputs_problem(inputs: list[FileFacts], products: Roots) -> str | None:
    for file in inputs:
        if file.problem:
            return f"input: {file.problem}"
        if not file.path.is_absolute() or not within_roots(file.resolved, products.resolved):
            return f"input {shown_path(file.path)} is outside the product store {products.given[0]}"
        if not file.is_file:
            return f"input {shown_path(file.path)} does not exist"
    return None
