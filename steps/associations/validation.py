"""Checking a level-2b or level-3 association before anyone runs it.

Two layers: jwst's own schema (asn_schema_jw_level2b.json and
asn_schema_jw_level3.json, read from the installed jwst without importing
it, so the planner stays free of jwst), and the invariants jwst's rules
guarantee but its schema does not state. Level 2b: one product, exactly one
science member, known member types, a product named after its science
member. Level 3: a known asn_type and member types, a science member, PSF
members for coron3 and ami3, stage-2 member products, jwst-style product
names.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

import jsonschema
import jsonschema_rs

from calstream.steps.associations.level2 import product_name
from calstream.steps.associations.level3_candidates import ACID, LEVEL3_ASN_TYPES
from calstream.steps.routing import BACKGROUND

ASN_TYPES = frozenset({"image2", "tso-image2", "spec2", "tso-spec2", "nrslamp-spec2"})
MEMBER_TYPES = frozenset({
    "science", "background", "imprint", "direct_image", "sourcecat", "segmap",
    "target_acquisition", "selfcal",
})
LEVEL3_MEMBER_TYPES = frozenset({
    "science", "background", "psf", "imprint", "sourcecat", "segmap", "direct_image",
    "target_acquisition",
})
_LEVEL3_NAME = re.compile(r"jw\d{5}-(o\d{3}|[ca]\d{4})_[a-z0-9{}_.+-]+")
_STAMP = re.compile(r"\d{8}t\d{6}")
_WFSS_TRIO = ("direct_image", "sourcecat", "segmap")


class AssociationInvalid(ValueError):
    """Not a level-2b association stage 2 can run; the message says why."""


@lru_cache(maxsize=4)
def jwst_schema(filename: str) -> dict[str, Any]:
    """One of jwst's association schemas, read from the installed package."""
    spec = importlib.util.find_spec("jwst")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise AssociationInvalid("jwst is not installed: its association schema is unavailable")
    path = Path(spec.submodule_search_locations[0]) / "associations/lib" / filename
    return json.loads(path.read_text())


@lru_cache(maxsize=4)
def _fast_validator(filename: str):
    # jsonschema-rs: a valid association passes in microseconds; an invalid
    # one is judged again below, for the reason an operator reads.
    return jsonschema_rs.validator_for(jwst_schema(filename))


def check_jwst_schema(asn: Mapping[str, Any], filename: str, label: str) -> None:
    """Raise AssociationInvalid with the best-matching schema error, if any."""
    if _fast_validator(filename).is_valid(asn):
        return
    schema = jwst_schema(filename)
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(asn))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise AssociationInvalid(f"jwst {label} schema: {error.message} (at {where})")


def level2_schema() -> dict[str, Any]:
    return jwst_schema("asn_schema_jw_level2b.json")


def level3_schema() -> dict[str, Any]:
    return jwst_schema("asn_schema_jw_level3.json")


def validate_level2(asn: Mapping[str, Any]) -> None:
    """Raise AssociationInvalid with the first reason ``asn`` would fail stage 2."""
    _validate(asn, "asn_schema_jw_level2b.json", "level-2b", _level2_problems)


def validate_level3(asn: Mapping[str, Any]) -> None:
    """Raise AssociationInvalid with every reason ``asn`` would fail stage 3."""
    _validate(asn, "asn_schema_jw_level3.json", "level-3", _level3_problems)


def _validate(asn: Mapping[str, Any], schema: str, label: str, problems_of) -> None:
    check_jwst_schema(asn, schema, label)
    problems = problems_of(asn)
    if problems:
        raise AssociationInvalid("; ".join(problems))


def _header_problems(asn: Mapping[str, Any], keys: tuple[str, ...],
                     asn_types: frozenset[str], label: str) -> list[str]:
    """The top-level fields both levels share: present, strings, well formed."""
    problems = []
    for key in keys:
        if not isinstance(asn.get(key), str) or not asn.get(key):
            problems.append(f"{key} missing or not a string")
    if asn.get("asn_type") not in asn_types:
        problems.append(f"asn_type {asn.get('asn_type')!r} is not a {label} type "
                        f"({', '.join(sorted(asn_types))})")
    if isinstance(asn.get("asn_id"), str) and not ACID.fullmatch(asn["asn_id"]):
        problems.append(f"asn_id {asn['asn_id']!r} is not a candidate id (oNNN, cNNNN, aNNNN)")
    if isinstance(asn.get("program"), str) and not re.fullmatch(r"\d{5}", asn["program"]):
        problems.append(f"program {asn['program']!r} is not 5 digits")
    if isinstance(asn.get("version_id"), str) and not _STAMP.fullmatch(asn["version_id"]):
        problems.append(f"version_id {asn['version_id']!r} is not yyyymmddthhmmss")
    return problems


_SHARED_KEYS = ("asn_type", "asn_rule", "asn_id", "asn_pool", "program", "version_id",
                "code_version", "degraded_status", "constraints")


def _level2_problems(asn: Mapping[str, Any]) -> list[str]:
    problems = _header_problems(asn, _SHARED_KEYS, ASN_TYPES, "level-2b")
    products = asn.get("products") or []
    if len(products) != 1:
        return problems + [f"a level-2b association has one product, this has {len(products)}"]
    return problems + _level2_product_problems(products[0])


def _level3_problems(asn: Mapping[str, Any]) -> list[str]:
    problems = _header_problems(asn, _SHARED_KEYS + ("target",), LEVEL3_ASN_TYPES, "level-3")
    products = asn.get("products") or []
    if not products:
        problems.append("no products")
    for i, product in enumerate(products):
        problems += [f"product {i}: {p}" for p in _level3_product_problems(asn, product)]
    return problems


def member_problems(members: list[Mapping[str, Any]], known_types: frozenset[str]) -> list[str]:
    """What is wrong with an association product's members, at any level."""
    problems = []
    names = [m.get("expname") for m in members]
    types = [m.get("exptype") for m in members]
    if any(not isinstance(n, str) or not n for n in names):
        problems.append("a member has no expname")
    unknown = sorted({str(t) for t in types} - known_types)
    if unknown:
        problems.append(f"unknown member type(s): {', '.join(unknown)}")
    if len(set(names)) != len(names):
        problems.append("a file appears twice among the members")
    return problems


def _level2_product_problems(product: Mapping[str, Any]) -> list[str]:
    problems = []
    members = product.get("members") or []
    types = [m.get("exptype") for m in members]
    problems += member_problems(members, MEMBER_TYPES)
    science = [m for m in members if m.get("exptype") == "science"]
    if len(science) != 1:
        return problems + [f"exactly one science member needed, found {len(science)}"]
    expname = str(science[0].get("expname"))
    suffix = PurePath(expname).name.split(".", 1)[0].rsplit("_", 1)[-1]
    if suffix not in ("rate", "rateints"):
        problems.append(f"science member {expname} is not a rate or rateints product")
    if product.get("name") != product_name(expname):
        problems.append(
            f"product name {product.get('name')!r} should be {product_name(expname)!r}, "
            "the science member's file name without its suffix"
        )
    trio = [t for t in _WFSS_TRIO if t in types]
    if trio and len(trio) != 3:
        problems.append(f"WFSS needs direct_image, sourcecat and segmap together, has {trio}")
    return problems


def _level3_product_problems(asn: Mapping[str, Any], product: Mapping[str, Any]) -> list[str]:
    problems = []
    name = product.get("name")
    prefix = f"jw{asn.get('program')}-{asn.get('asn_id')}_"
    if not isinstance(name, str) or not _LEVEL3_NAME.fullmatch(name) or name != name.lower():
        problems.append(f"name {name!r} is not a lower-case jwst level-3 product name")
    elif not name.startswith(prefix):
        problems.append(f"name {name!r} does not start with {prefix!r} (program and asn_id)")
    members = product.get("members") or []
    types = [m.get("exptype") for m in members]
    problems += member_problems(members, LEVEL3_MEMBER_TYPES)
    if "science" not in types:
        problems.append("no science member")
    if asn.get("asn_type") in ("coron3", "ami3") and "psf" not in types:
        problems.append(f"{asn.get('asn_type')} needs psf members")
    for m in members:
        expname, exptype = str(m.get("expname")), m.get("exptype")
        suffix = PurePath(expname).name.split(".", 1)[0].rsplit("_", 1)[-1]
        wanted = ("x1d", "x1dints") if exptype == BACKGROUND else ("cal", "calints")
        if exptype in ("science", "psf", BACKGROUND) and suffix not in wanted:
            problems.append(f"{exptype} member {expname} is not a {' or '.join(wanted)} product")
    return problems
