"""What an arriving uncal file is, from its name and primary header only.

The name is what the topics are keyed on and the header is what the planner
decides on, so the two must tell the same story: a file whose name disagrees
with its header would be calibrated under one identity and associated under
another. Such files are refused here, with a reason an operator can act on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astropy.io import fits

from calstream.steps.failures import error_text

from .associations.filenames import NamingError, version_stamp
from .compressed_sci import ImpossibleImage, compressed_sci_axes
from .exposure_keywords import (
    EXPOSURE_KEYWORDS,
    GUIDER_EXP_TYPES,
    NOT_IN_GUIDER_HEADERS,
    REQUIRED_KEYWORDS,
    TEXT_KEYWORDS,
)
from .fits_cards import file_card_problem
from .fitsfile import FitsError, FitsLayout, HduLayout, fits_layout, read_primary_values
from .header_checks import count_problems, shape_problems
from .naming import BadName, ExposureName, parse_exposure_name
from .uncal_tables import uncal_table_problem

# Extensions an uncal file must have before it counts as arrived: what makes
# it a whole exposure. A FITS file cut exactly at an HDU boundary is valid
# FITS, so structure alone cannot tell "primary header written, pixels still
# to come" from "done". stdatamodels writes the ASDF extension last, so a
# file that has it has everything before it too.
UNCAL_REQUIRED_EXTENSIONS: tuple[str, ...] = ("SCI", "ASDF")

UNCAL_SUFFIX = "uncal"

# The most bytes an uncal file can hold: a generous ceiling, not an
# instrument rule. JWST's recorder holds ~60 GB of a day's data, and the
# ground system splits a long exposure into segments of a few GB each; the
# counts' own bounds (header_checks.py) allow 10^21 bytes. A file declaring
# more is refused by its headers alone: hashed, a sparse one
# (``truncate -s 80G``: no disk, all zeros when read) held one of the door's
# turns and a core for minutes, and an admission's digest its partition.
MAX_UNCAL_BYTES = 64 << 30


class BadExposure(ValueError):
    """An arrival that is not a usable uncal exposure; the message says why."""


@dataclass(frozen=True)
class ExposureInfo:
    name: ExposureName
    exposure_id: str
    path: Path
    header: dict[str, Any] = field(repr=False)  # EXPOSURE_KEYWORDS present, JSON-friendly


def missing_extensions(
    layout: FitsLayout, required: tuple[str, ...] = UNCAL_REQUIRED_EXTENSIONS
) -> list[str]:
    present = {h.key for h in layout.hdus[1:]}
    return [name for name in required if (name.upper(), 1) not in present]


def incomplete_reason(layout: FitsLayout,
                      required: tuple[str, ...] = UNCAL_REQUIRED_EXTENSIONS) -> str:
    """Why a valid FITS layout is not yet a whole exposure ("" if it is)."""
    if not layout.complete:
        return layout.reason
    missing = missing_extensions(layout, required)
    if missing:
        return f"valid FITS with {layout.n_hdus} HDU(s) but no {', '.join(missing)} extension yet"
    return ""


def size_problem(layout: FitsLayout) -> str | None:
    """Why a file's size, on disk or as its headers declare it, is more than
    any exposure's (None: it is not). Read from the walk: no data read."""
    size = max(layout.size, layout.expected_size)
    if size <= MAX_UNCAL_BYTES:
        return None
    return (f"{size} bytes (on disk or declared by its headers), larger than any exposure "
            f"({MAX_UNCAL_BYTES} bytes): refused unread")


def json_value(value: Any) -> Any:
    if isinstance(value, fits.card.Undefined) or value is None:
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, bool | int | str):
        return value.rstrip() if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _norm(value: Any, width: int) -> str:
    """Header id values as the file name writes them: some writers store
    PROGRAM or EXPOSURE as integers, which lose their leading zeros."""
    text = str(value).strip().lower()
    return text.zfill(width) if text.isdigit() else text


def uncal_name(filename: str) -> ExposureName:
    """Parse an uncal file name; BadExposure for any other name."""
    fname = filename.rsplit("/", 1)[-1]
    try:
        name = parse_exposure_name(fname)
    except BadName as exc:
        raise BadExposure(str(exc)) from exc
    if not fname.endswith(".fits") or name.suffix != UNCAL_SUFFIX:
        raise BadExposure(
            f"{fname}: not an uncal exposure (expected a name ending in "
            f"_{UNCAL_SUFFIX}.fits, got suffix {name.suffix!r})"
        )
    return name


def describe_exposure(path: str | os.PathLike[str]) -> ExposureInfo:
    """Identify an uncal file and check its name against its primary header.

    Raises BadExposure (a ValueError) naming the file and the keyword at
    fault; OSError when the file cannot be read at all.
    """
    path = Path(path)
    fname = path.name
    name = uncal_name(fname)
    try:
        hdr = read_primary_values(path)
    except FitsError as exc:
        raise BadExposure(str(exc)) from exc

    # A card astropy cannot parse (NGROUPS = NaN, a broken string) raises on
    # access: that is a fact about the file, not a reason to retry it.
    unreadable = []
    for key in (*(k.name for k in EXPOSURE_KEYWORDS), "SUBSIZE1", "SUBSIZE2"):
        try:
            hdr.get(key)
        except (fits.VerifyError, ValueError) as exc:
            unreadable.append(f"{key} ({str(exc).splitlines()[0][:120]})")
    if unreadable:
        raise BadExposure(f"{fname}: primary-header value(s) cannot be read: "
                          + ", ".join(unreadable))
    guider = str(hdr.get("EXP_TYPE", "")).strip().upper() in GUIDER_EXP_TYPES
    required = [k for k in REQUIRED_KEYWORDS if not (guider and k in NOT_IN_GUIDER_HEADERS)]
    missing = [k for k in required if k not in hdr or isinstance(hdr[k], fits.card.Undefined)]
    if missing:
        raise BadExposure(
            f"{fname}: required primary-header keyword(s) missing or without a value: "
            + ", ".join(missing)
        )

    if name.is_guider and not guider:
        raise BadExposure(f"{fname}: a guider file name, but EXP_TYPE = "
                          f"{hdr.get('EXP_TYPE')!r} is no FGS guider mode "
                          f"({', '.join(sorted(GUIDER_EXP_TYPES))})")
    disagree = name_header_disagreements(name, hdr, guider)
    if disagree:
        raise BadExposure(f"{fname}: name and primary header disagree: " + "; ".join(disagree))

    header = {k.name: json_value(hdr[k.name]) for k in EXPOSURE_KEYWORDS if k.name in hdr}
    # Some writers store the ids as integers. They agree with the name (just
    # checked) and travel as the name's text, which the arrival's schema and
    # every reader of the copy expect (PROGRAM = 1234 made an arrival that
    # could not be built).
    for key, part in zip(REQUIRED_KEYWORDS[:7], _name_parts(name), strict=True):
        if part and type(header.get(key)) is int:
            header[key] = part
    counts = {k: json_value(hdr[k]) for k in (*COUNT_KEYWORDS, "READPATT") if k in hdr}
    problems = text_keyword_problems(header) + count_problems(counts) + date_time_problems(hdr)
    if not problems:
        problems = shape_problems(counts, _sci_header(path, fname))
    if problems:
        raise BadExposure(f"{fname}: impossible header value(s): " + "; ".join(problems))
    return ExposureInfo(name=name, exposure_id=name.exposure_id, path=path, header=header)


def name_header_disagreements(name: ExposureName, hdr: Mapping[str, Any],
                              guider: bool) -> list[str]:
    """Where the primary header (a file's, or its copy in a message) tells
    another story than the exposure's name."""
    expected = (
        ("PROGRAM", name.program, 5),
        ("OBSERVTN", name.observation, 3),
        ("VISIT", name.visit, 3),
        ("VISITGRP", name.visit_group, 2),
        ("SEQ_ID", name.sequence, 1),
        ("ACT_ID", name.activity, 2),
        ("EXPOSURE", name.exposure, 5),
        ("DETECTOR", name.detector, 0),
    )
    disagree = [
        f"{key} = {hdr[key]!r} but the name says {want!r}"
        for key, want, width in expected
        # A guider name has no visit group ... detector, a guider header
        # no visit group ... exposure: nothing to compare there.
        if not (guider and (not want or key not in hdr)) and _norm(hdr[key], width) != want
    ]
    segnum = hdr.get("EXSEGNUM")
    segtot = hdr.get("EXSEGTOT")
    if name.segment is not None:
        if segnum is None:
            disagree.append(f"the name says segment {name.segment} but EXSEGNUM is missing")
        elif _norm(segnum, 3) != name.segment:
            disagree.append(f"EXSEGNUM = {segnum!r} but the name says segment {name.segment}")
    elif isinstance(segtot, int) and segtot > 1:
        # Segments of one exposure would share an exposure id without the
        # -segNNN part and overwrite each other downstream.
        disagree.append(
            f"EXSEGTOT = {segtot} (segment {segnum!r}) but the name has no -segNNN part"
        )
    return disagree


def text_keyword_problems(hdr: Mapping[str, Any]) -> list[str]:
    """TEXT_KEYWORDS present with a value that is not text."""
    return [f"{k} = {hdr[k]!r} is not text" for k in TEXT_KEYWORDS
            if k in hdr and not isinstance(hdr[k], str)]


def date_time_problems(hdr: Mapping[str, Any]) -> list[str]:
    """DATE-OBS and TIME-OBS as association names read them (the exposure
    start; CRDS selects by it too): a value they cannot read is refused at
    the door, not found by the planner when it names an association."""
    try:
        version_stamp(hdr)
    except NamingError as exc:
        return [str(exc)]
    return []


# What a FITS card's value can be, once read into JSON (see json_value).
FITS_VALUE_TYPES = frozenset({str, int, float, bool, type(None)})


def non_fits_values(header: Mapping[str, Any]) -> list[str]:
    """The reason a header copy holds values no FITS card can (an object, a
    list), or none: the first check of every header a message carries."""
    if FITS_VALUE_TYPES.issuperset(map(type, header.values())):
        return []
    odd = sorted(str(k)[:40] for k, v in header.items() if type(v) not in FITS_VALUE_TYPES)
    return [f"header value(s) of {', '.join(odd[:10])} are not FITS values"]


def header_copy_problems(name: ExposureName, header: Mapping[str, Any]) -> list[str]:
    """Why a header carried in a message (a product event's) cannot be what
    describe_exposure let through from this exposure's file; empty if it can.

    The planner decides on that copy: routing, completeness and association
    names read it. A forged one would reach them with values no file passes
    the door with -- NEXPOSUR = 10**18 (a list of that many missing
    exposures), a TIME-OBS that names nothing, an object where a filter name
    goes -- and fail there, for every later decision about its visit. The
    same rules as for a file, written once: the required keywords, the
    name's agreement, the text keywords' type, the counts' bounds, the
    start's date and time.

    On the planner's way in for every new product event, so what a true
    header passes is asked first, in C where it can be (the type of every
    value, the required keywords in one ``map``, the name's parts as one
    tuple); the reasons are worked out only for a header that fails.
    """
    odd = non_fits_values(header)
    if odd:
        return odd
    required = tuple(map(header.get, REQUIRED_KEYWORDS))
    if None in required or required[:7] != _name_parts(name) \
            or str(required[8]).lower() != name.detector or name.segment is not None \
            or header.get("EXSEGTOT", 1) != 1 or type(required[7]) is not str \
            or type(required[9]) is not str or type(required[13]) is not str \
            or type(required[14]) is not str:
        guider = str(header.get("EXP_TYPE", "")).strip().upper() in GUIDER_EXP_TYPES
        missing = [k for k, v in zip(REQUIRED_KEYWORDS, required, strict=True)
                   if v is None and not (guider and k in NOT_IN_GUIDER_HEADERS)]
        if missing:
            return [f"header without required keyword(s) {', '.join(missing)}"]
        problems = name_header_disagreements(name, header, guider) \
            + text_keyword_problems(header)
    else:
        problems = []
    return problems + count_problems(header) + date_time_problems(header)


def _name_parts(name: ExposureName) -> tuple[str, ...]:
    """The name's parts in the order REQUIRED_KEYWORDS starts with."""
    return (name.program, name.observation, name.visit, name.visit_group, name.sequence,
            name.activity, name.exposure)


COUNT_KEYWORDS = ("NGROUPS", "NINTS", "NEXPOSUR", "EXSEGTOT", "EXSEGNUM", "INTSTART", "INTEND",
                  "SUBSIZE1", "SUBSIZE2")


def _sci_header(path: Path, fname: str) -> dict[str, Any]:
    """The SCI extension's axes, from the walk of the file's headers (no
    pixel read). Opening the file with astropy for them parsed the primary
    header a second time and every header up to SCI: describe_exposure took
    2.7 ms of CPU at SUB160 with it, 1.7 ms now (bench/README.md, session 21).
    The SCI extension is the one stdatamodels reads, ``hdul["SCI", 1]``:
    the first HDU whose EXTNAME, stripped and upper-cased, is SCI and whose
    EXTVER is 1 (a SCI of EXTVER 2 passed, and jwst found none). A binary
    table is read by astropy (a tile-compressed image: compressed_sci.py).
    First, what stdatamodels reads of any file: fits_cards, uncal_tables."""
    layout = fits_layout(path)
    too_large = size_problem(layout)
    if too_large:
        raise BadExposure(f"{fname}: {too_large}")
    # The door reads a file only once it is whole; an arrival someone else
    # sent may name one still being copied in (run, it failed in jwst).
    missing = incomplete_reason(layout)
    if missing:
        raise BadExposure(f"{fname}: not a whole exposure: {missing}")
    unreadable = file_card_problem(path, layout.hdus) or uncal_table_problem(path, layout.hdus)
    if unreadable is not None:
        raise BadExposure(f"{fname}: {unreadable}")
    for hdu in layout.hdus:
        if hdu.key == ("SCI", 1):
            kind = str(hdu.xtension).strip().upper() if hdu.index else "IMAGE"
            if kind == "BINTABLE":
                return _sci_header_by_astropy(path, hdu, fname)
            if kind != "IMAGE":  # jwst would read no image there, or another array
                raise BadExposure(f"{fname}: the SCI extension is no image "
                                  f"(XTENSION = {str(hdu.xtension)[:20]!r})")
            axes = dict(zip(_AXES, hdu.axes, strict=False))
            return {"NAXIS": len(hdu.axes), **{k: axes.get(k) for k in _AXES}}
    raise BadExposure(f"{fname}: no SCI extension")


def _sci_header_by_astropy(path: Path, table: HduLayout, fname: str) -> dict[str, Any]:
    """A SCI binary table: a tile-compressed image (compressed_sci.py), or none."""
    try:
        return compressed_sci_axes(path, table, fname)
    except OSError:
        raise  # unreadable: the disk's fault, tried again
    except ImpossibleImage as exc:
        raise BadExposure(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a forged compressed header: ZNAXIS = 'x'
        # raised TypeError; astropy raises many kinds for a malformed header
        # or tile, and each is a fact about the file, never a reason to retry.
        raise BadExposure(f"{fname}: the SCI header or pixels cannot be read: "
                          f"{error_text(exc, 200)}") from None


_AXES = ("NAXIS1", "NAXIS2", "NAXIS3", "NAXIS4")
