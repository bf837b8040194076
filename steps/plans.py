"""Plans: what an operator says a program will deliver, before it arrives.

Headers cannot say how many visits an observation has, nor which
observations an APT candidate (``c1NNN``) spans; a plan can. Two forms are
read:

* a jwst **association pool** (the pipe-delimited table operations feed
  ``asn_generate``): one row per exposure file, with its keywords and its
  ``ASN_CANDIDATE`` list, e.g. ``[('o001', 'observation'), ('c1000', 'mosaic')]``;
* a **manifest**, JSON: ``{"program": "01234", "exposures": [{"exposure_id" or
  "filename": ..., "candidates": ["o001", "c1000"], "header": {...}}]}`` for
  tools that have no pool. ``header`` holds whatever keywords are known
  (EXP_TYPE, FILTER, ...); the exposure name supplies the rest.

Both become a ``Plan``: one ``PlannedExposure`` per expected file (segments
expanded from EXSEGTOT when a row names the whole exposure), each with a
header-like mapping the routing and level-3 rules read exactly as they read
an arrival's header. Parsing is strict: a row that cannot be understood is
an error naming the row, never skipped silently, because a plan that drops
an exposure would close a candidate too early.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from calstream.steps.exposure import non_fits_values
from calstream.steps.failures import error_text
from calstream.steps.header_checks import COUNT_BOUNDS, count_problems
from calstream.steps.naming import BadName, ExposureName, parse_exposure_name
from calstream.steps.regular_files import read_regular_text

# Pool values that mean "no value" (jwst's dms_base._EMPTY and pool writers).
# A program's pool is a few MB (a row of ~100 columns per exposure file); a
# file far larger is no plan, and is not read into memory.
PLAN_LIMIT = 256 << 20

_EMPTY = frozenset({"", "NULL", "NONE", "N/A", "--"})
_ACID = re.compile(r"o\d{3}|[ca]\d{4}")
# Pool columns under another name than the FITS keyword they stand for.
_POOL_TO_KEYWORD = {"OBS_NUM": "OBSERVTN", "VISITGRP": "VISITGRP", "ACT_ID": "ACT_ID"}


class PlanError(ValueError):
    """A plan that cannot be read; the message names the file and row."""


@dataclass(frozen=True)
class PlannedExposure:
    exposure_id: str  # e.g. jw01234001001_02101_00001_nrcb1 (with -segNNN when segmented)
    candidates: tuple[str, ...]  # acids: o001, c1000, ...
    header: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def name(self) -> ExposureName:
        return parse_exposure_name(self.exposure_id)


@dataclass(frozen=True)
class Plan:
    plan_id: str  # digest of the content: loading the same plan twice is one plan
    source: str
    exposures: tuple[PlannedExposure, ...]

    @property
    def programs(self) -> tuple[str, ...]:
        return tuple(sorted({e.name.program for e in self.exposures}))

    @property
    def observations(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted({(e.name.program, e.name.observation) for e in self.exposures}))

    def to_json(self) -> dict[str, Any]:
        return {"plan_id": self.plan_id, "source": self.source,
                "exposures": [{"exposure_id": e.exposure_id, "candidates": list(e.candidates),
                               "header": dict(e.header)} for e in self.exposures]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """A plan from its message (the plans topic, the ledger): untrusted,
        so each header is held to what a header can hold (_plain_header).
        PlanError says why one cannot be used, whatever its shape: each
        reader (the planner's loop, its restore, its ledger) refuses it alike."""
        try:
            plan = cls(data["plan_id"], data.get("source", ""), tuple(
                PlannedExposure(e["exposure_id"], tuple(e.get("candidates", ())),
                                _plain_header(dict(e.get("header") or {}), e["exposure_id"]))
                for e in data["exposures"]))
            # Its id is its content's digest, and readers trust it so (one plan
            # an id: the first read wins, the ledger keeps one file an id): a
            # forged plan under a real plan's id, compacting the real record
            # away, replaced it at the next start, the planner's own kept copy
            # left unread as "still on the broker".
            if plan.plan_id != plan_digest(list(plan.exposures)):
                raise PlanError("its plan_id is not the digest of its exposures and candidates")
            return plan
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            why = str(exc) if isinstance(exc, PlanError) else error_text(exc)
            raise PlanError(f"plan {str(data.get('plan_id'))[:12]} cannot be used: "
                            f"{why[:300]}") from None


def _plain_header(header: dict[str, Any], where: str) -> dict[str, Any]:
    """``header`` if its values are FITS values and its counts within a
    file's bounds: routing and level-3 names read a plan's keywords as they
    read an arrival's (steps/exposure.header_copy_problems judges those)."""
    # A pool's values are text: only the counts given as numbers are judged.
    counts = {k: v for k, v in header.items() if k in COUNT_BOUNDS and type(v) is int}
    problems = non_fits_values(header) or count_problems(counts, required=())
    if problems:
        raise PlanError(f"{where}: " + "; ".join(problems))
    return header


def load_plan(path: str | Path) -> Plan:
    """A pool (``*.csv``, pipe-delimited) or a manifest (``*.json``)."""
    path = Path(path)
    try:
        # Bounded and never a FIFO or device: `plan load` of one waited for ever.
        text = read_regular_text(path, limit=PLAN_LIMIT)
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan {path}: {exc}") from None
    if text.lstrip().startswith(("{", "[")):  # JSON: said so when it is no manifest
        return parse_manifest(text, source=path.name)
    return parse_pool(text, source=path.name)


def plan_digest(exposures: list[PlannedExposure]) -> str:
    canonical = json.dumps([[e.exposure_id, sorted(e.candidates)] for e in
                            sorted(exposures, key=lambda e: e.exposure_id)])
    return hashlib.sha256(canonical.encode()).hexdigest()


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip()
        return None if value.upper() in _EMPTY else value
    return value


def _expand_segments(name: ExposureName, header: Mapping[str, Any], where: str) -> list[str]:
    """A row for a whole segmented exposure stands for its EXSEGTOT files
    (within the bounds a file's EXSEGTOT meets: 10**12 would be a list
    that size)."""
    if name.segment:
        return [name.exposure_id]
    try:
        total = int(str(header.get("EXSEGTOT") or 1))
    except ValueError:
        total = 1
    low, high = COUNT_BOUNDS["EXSEGTOT"]
    if total > high:
        raise PlanError(f"{where}: EXSEGTOT = {total} is outside {low}..{high}")
    if total <= 1:
        return [name.exposure_id]
    return [replace(name, segment=f"{s:03d}", suffix=None).exposure_id
            for s in range(1, total + 1)]


def pool_candidates(text: Any, where: str) -> tuple[str, ...]:
    """The candidate ids (acids) of a pool's ASN_CANDIDATE text, e.g.
    ``[('c1000', 'coronagraphy'), ('o001', 'observation')]`` -> (c1000, o001)."""
    if text is None:
        return ()
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        raise PlanError(f"{where}: ASN_CANDIDATE {text!r} is not a list of (id, type)") from None
    acids = []
    for item in value if isinstance(value, (list, tuple)) else ():
        acid = str(item[0] if isinstance(item, (list, tuple)) else item).lower()
        if not _ACID.fullmatch(acid):
            raise PlanError(f"{where}: candidate id {acid!r} is not oNNN, cNNNN or aNNNN")
        acids.append(acid)
    return tuple(acids)


def _with_name_keywords(name: ExposureName, header: dict[str, Any]) -> dict[str, Any]:
    """Keywords the file name fixes, as headers write them (pools drop leading zeros)."""
    header.update(PROGRAM=name.program, OBSERVTN=name.observation, VISIT=name.visit)
    if not name.is_guider:  # a guider's name has no exposure number or detector
        header.update(EXPOSURE=name.exposure, DETECTOR=name.detector.upper())
    if name.segment:
        header["EXSEGNUM"] = str(int(name.segment))
    return header


def pool_row_header(values: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords a pool row gives (its columns, upper-case), as a plan's
    header holds them: the empty ones, the file name and the candidates left out."""
    cleaned = {c: _clean(v) for c, v in values.items()}
    return {_POOL_TO_KEYWORD.get(c, c): v for c, v in cleaned.items()
            if v is not None and c not in ("FILENAME", "ASN_CANDIDATE")}


def parse_pool(text: str, *, source: str = "pool") -> Plan:
    reader = csv.reader(io.StringIO(text), delimiter="|")
    # Lines starting with "#" are comments, as jwst's pool reader (astropy) skips them.
    try:
        rows = [r for r in reader
                if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
    except csv.Error as exc:  # a field over csv's limit, a NUL: no pool
        raise PlanError(f"{source}: not a pool: {exc}") from None
    if not rows:
        raise PlanError(f"{source}: empty pool")
    columns = [c.strip().upper() for c in rows[0]]
    if "FILENAME" not in columns:
        raise PlanError(f"{source}: not a jwst association pool (no FILENAME column in "
                        f"{'|'.join(columns[:6])}...)")
    exposures: list[PlannedExposure] = []
    for number, row in enumerate(rows[1:], start=2):
        where = f"{source} row {number}"
        if len(row) != len(columns):
            raise PlanError(f"{where}: {len(row)} values for {len(columns)} columns")
        values = {c: _clean(v) for c, v in zip(columns, row, strict=True)}
        try:
            name = parse_exposure_name(values["FILENAME"] or "")
        except BadName as exc:
            raise PlanError(f"{where}: {exc}") from None
        header = _with_name_keywords(name, pool_row_header(values))
        acids = pool_candidates(values.get("ASN_CANDIDATE"), where)
        for exposure_id in _expand_segments(name, header, where):
            seg_header = _with_name_keywords(parse_exposure_name(exposure_id), dict(header))
            exposures.append(PlannedExposure(exposure_id, acids, seg_header))
    return _plan(exposures, source)


def parse_manifest(text: str, *, source: str = "manifest") -> Plan:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser's limit
        raise PlanError(f"{source}: not JSON: {str(exc)[:200]}") from None
    entries = data.get("exposures") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"{source}: a manifest is {{\"exposures\": [...]}} with at least one entry")
    exposures: list[PlannedExposure] = []
    for i, entry in enumerate(entries):
        where = f"{source} exposure {i}"
        if not isinstance(entry, dict):
            raise PlanError(f"{where}: not an object")
        ident = entry.get("exposure_id") or entry.get("filename")
        try:
            name = parse_exposure_name(str(ident or ""))
        except BadName as exc:
            raise PlanError(f"{where}: {exc}") from None
        given = entry.get("header") or {}
        if not isinstance(given, dict):
            raise PlanError(f"{where}: its header is not an object of keywords")
        header = _plain_header({str(k).upper(): v for k, v in given.items()
                                if _clean(v) is not None}, where)
        header = _with_name_keywords(name, header)
        raw = entry.get("candidates") or [f"o{name.observation}"]
        if not isinstance(raw, list):
            raise PlanError(f"{where}: its candidates are not a list")
        acids = pool_candidates(repr([str(a) for a in raw]), where)
        for exposure_id in _expand_segments(name, header, where):
            seg_header = _with_name_keywords(parse_exposure_name(exposure_id), dict(header))
            exposures.append(PlannedExposure(exposure_id, acids, seg_header))
    return _plan(exposures, source)


def _plan(exposures: list[PlannedExposure], source: str) -> Plan:
    seen: dict[str, PlannedExposure] = {}
    for e in exposures:
        if e.exposure_id in seen and seen[e.exposure_id].candidates != e.candidates:
            raise PlanError(f"{source}: {e.exposure_id} is listed twice with different candidates")
        seen[e.exposure_id] = e
    unique = sorted(seen.values(), key=lambda e: e.exposure_id)
    return Plan(plan_digest(unique), source, tuple(unique))
