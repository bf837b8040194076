"""Before a run on several science members: their references, found in the
cache up front, for every member and not only the first.

stpipe's prefetch (``Pipeline._precache_references``) asks crds for the
references of the run's steps with the parameters of the association's
*first* science member only. A level-3 run whose members differ in what
selects a reference (another detector, another filter, a date past a
reference's USEAFTER) then met a reference missing from the cache only when
a step reached that member, possibly hours in, and the hours were lost when
it was parked. Here the same question is put for each distinct selection
among the members before the run starts, so a missing or unreadable file
parks the run at once (crds's own error, classified as in any run:
steps/failures.py).

What selects is crds's own answer: the parameters each reference type's
rules of the run's context match on (``get_required_parkeys``), the
date-time ones being those its rules give to ``UseAfter``. Members equal in
every other key are one group; a group is looked up at its earliest and
latest date, and only if the two answers differ at each of its dates (a
USEAFTER picks the latest reference not after the date: two dates that pick
the same file pick it for every date between). So 100 members of one
detector and filter cost two lookups, not 100. The reference types are the
configured pipeline's own (``reference_file_types``: the steps it will not
skip, as stpipe's prefetch takes them; overridden ones left out), a type
crds answers ``N/A`` for is no file, and a member whose header no rule covers
("No match found") is left to the run: it fails on its merits if a step
needs that reference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from calstream.steps.failures import selects_no_reference

log = logging.getLogger("calstream.crds")

OBSERVATORY = "jwst"
USE_AFTER = "UseAfter"


def science_members(association: Mapping[str, Any]) -> list[str]:
    """The science members' paths, in the association's order, once each."""
    found: dict[str, None] = {}
    for product in association.get("products", []):
        for member in product.get("members", []):
            if str(member.get("exptype", "")).lower() == "science" and member.get("expname"):
                found.setdefault(str(member["expname"]))
    return list(found)


def _value(params: Mapping[str, Any], key: str):
    # crds names a parameter META.INSTRUMENT.DETECTOR; a model's flattened
    # metadata meta.instrument.detector.
    return params.get(key, params.get(key.lower()))


def selections(members: Sequence[Mapping[str, Any]], match_keys: Iterable[str],
               date_keys: Sequence[str]) -> list[list[Mapping[str, Any]]]:
    """``members``' parameters grouped by their values of ``match_keys``, each
    group sorted by its values of ``date_keys`` (ISO date, then time: they
    sort as text), groups in the order of their first member."""
    keys = sorted(set(match_keys) - set(date_keys))
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for params in members:
        groups.setdefault(tuple(str(_value(params, k)) for k in keys), []).append(params)
    return [sorted(group, key=lambda p: tuple(str(_value(p, k)) for k in date_keys))
            for group in groups.values()]


def lookups(group: Sequence[Mapping[str, Any]], date_keys: Sequence[str],
            lookup: Callable[[Mapping[str, Any]], Any]) -> int:
    """``lookup`` at the group's earliest and latest date; at every other
    distinct date only if those two answered differently. Returns how many
    lookups were made."""
    first, last = group[0], group[-1]
    answer = lookup(first)
    when = [tuple(str(_value(p, k)) for k in date_keys) for p in group]
    if when[0] == when[-1]:
        return 1
    if lookup(last) == answer:
        return 2
    done = {when[0], when[-1]}
    for params, at in zip(group, when, strict=True):
        if at not in done:
            done.add(at)
            lookup(params)
    return len(done)


def selection_keys(context: str, instrument: str,
                   reftypes: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """(the keys the rules of ``reftypes`` match on, their UseAfter date
    keys, the types that have rules for ``instrument``) in ``context``."""
    import crds
    from crds.core.exceptions import CrdsError

    imap = crds.get_cached_mapping(context).get_imap(instrument.lower())
    match: set[str] = set()
    dates: dict[str, None] = {}
    kept = []
    for reftype in reftypes:
        try:
            rmap = imap.get_rmap(reftype)
        except (CrdsError, LookupError):  # N/A here (crds: irrelevant), or unknown: the run judges
            continue
        kept.append(reftype)
        levels = dict(zip(rmap.header.get("classes", ()), rmap.parkey, strict=False))
        for key in levels.get(USE_AFTER, ()):
            dates.setdefault(key)
        match |= set(rmap.get_required_parkeys())
    return sorted(match - set(dates)), list(dates), kept


def configured(cls, run_path: str, kwargs: Mapping[str, Any]):
    """``cls`` made as ``cls.call(run_path, **kwargs)`` makes it (its CRDS
    parameter files, then ``kwargs``), to run with ``.run(run_path)``: the
    run and the look-ups here share one configuration, read once."""
    passed = {k: v for k, v in kwargs.items() if k != "configure_log"}
    config, config_file = cls.build_config(run_path, **passed)
    config.pop("class", None)
    return cls.from_config_section(config, name=config.get("name"), config_file=config_file)


def pipeline_reftypes(pipeline) -> list[str]:
    """The reference types the configured ``pipeline`` asks crds for: those of
    its steps that are not skipped (stpipe's prefetch takes the same), less
    the types given an override."""
    return sorted({t for t in pipeline.reference_file_types
                   if pipeline.get_ref_override(t) is None})


def _fetch(params: Mapping[str, Any], reftypes: Sequence[str]) -> dict[str, str]:
    """The references of ``reftypes`` for ``params``, each opened (what stpipe's
    prefetch does for the first member); a type no rule covers for these
    parameters is left to the run."""
    from stpipe import crds_client

    try:
        paths = crds_client.get_multiple_reference_paths(dict(params), list(reftypes),
                                                         OBSERVATORY)
    except Exception as exc:
        if not selects_no_reference(exc):
            raise
        if len(reftypes) == 1:
            return {}
        # A type no rule covers: the others still asked, one at a time.
        paths = {}
        for reftype in reftypes:
            paths.update(_fetch(params, [reftype]))
        return paths
    for path in paths.values():
        crds_client.check_reference_open(path)
    return paths


MEMBER = "calstream.member"  # where a selection's member is named: no crds key


def _selection(path: str, header: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """The values of crds's ``keys`` in the member's primary header (the
    keyword crds's own schema map gives each), and the member's path."""
    from crds.jwst.schema import dm_to_fits

    return {**{key: header.get(dm_to_fits(key) or "") for key in keys}, MEMBER: path}


def prefetch_members(pipeline, run_path: str) -> int:
    """Every reference the configured ``pipeline`` (``configured``) may ask
    crds for, run on the association at ``run_path``: looked up and opened
    for each distinct selection among its science members; raises crds's (or
    the open's) error as the run would. Nothing when it has one science
    member (stpipe's prefetch covers it). Returns the number of look-ups.

    A member's selection is read from its primary header (milliseconds; a
    full metadata read takes some 0.1 s a member); a look-up gives crds the
    member's whole metadata, as jwst does."""
    from astropy.io import fits
    from stdatamodels.jwst.datamodels import read_metadata
    from stpipe import crds_client

    here = Path(run_path).parent  # where jwst resolves a relative member
    members = [str(here / m) for m in science_members(json.loads(Path(run_path).read_text()))]
    if len(members) < 2:
        return 0
    reftypes = pipeline_reftypes(pipeline)
    context = crds_client.get_context_used(OBSERVATORY)
    headers = {m: fits.getheader(m, 0) for m in members}
    by_instrument: dict[str, list[str]] = {}
    for member, header in headers.items():
        by_instrument.setdefault(str(header.get("INSTRUME", "")), []).append(member)

    count = 0
    for instrument, same in by_instrument.items():
        match, dates, kept = selection_keys(context, instrument, reftypes)
        if not kept:
            continue
        chosen = [_selection(m, headers[m], [*match, *dates]) for m in same]
        for group in selections(chosen, match, dates):
            count += lookups(group, dates, lambda chosen, kept=kept: _fetch(
                read_metadata(chosen[MEMBER], flatten=True), kept))
    log.debug("references of %d science members in %d look-ups (%s)", len(members), count,
              ", ".join(reftypes))
    return count
