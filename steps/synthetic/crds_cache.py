"""A local CRDS cache that crds resolves fully offline.

Layout (what crds reads with CRDS_PATH set and a "serverless" server URL)::

    config/jwst/server_config              python dict: operational/latest context, ...
    config/jwst/ref_cache_subdir_mode      "flat"
    mappings/jwst/jwst_NNNN.pmap           instrument -> imap
    mappings/jwst/jwst_<instr>_NNNN.imap   every JWST reference type -> rmap, or 'N/A'
    mappings/jwst/jwst_<instr>_<type>_NNNN.rmap   Match(detector, subarray[, exp type]) -> UseAfter
    references/jwst/jwst_<instr>_<type>_NNNN.<ext>

Each call adds one context (NNNN = `context_number`) to the same cache, so a
second context with, say, a rescaled gain lives next to the first and either
can be selected with CRDS_CONTEXT. Reference files are filed under CRDS-style
names; a file identical to one already in the cache is reused, not copied.
"""

from __future__ import annotations

import ast
import hashlib
import pprint
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

OBSERVATORY = "jwst"
# What the rmaps select on: detector and subarray, then the observation date.
MATCH_KEYS = ("META.INSTRUMENT.DETECTOR", "META.SUBARRAY.NAME")
# ... and the exposure type, in the rmaps of a type whose references for one
# detector and subarray differ by it (a WFSS direct image and its grism image
# share a subarray but not their FLAT, PHOTOM or APCORR).
EXP_TYPE_KEY = "META.EXPOSURE.TYPE"
USEAFTER_KEYS = ("META.OBSERVATION.DATE", "META.OBSERVATION.TIME")
ANY = "N/A"  # as a Match value: any value
NOT_APPLICABLE = "N/A"  # as an imap value: the type does not apply
# Parameter references of jwst steps newer than the installed crds's type list
# (jwst 3.0's targ_centroid, crds 14.0.3): stpipe asks for them all the same,
# and crds logs an error for a type the context does not list.
NEWER_PARAMETER_TYPES = ("pars-targcentroidstep",)


@dataclass(frozen=True)
class _Selection:
    instrument: str
    reftype: str
    detector: str
    subarray: str
    useafter: str  # "YYYY-MM-DD HH:MM:SS"
    source: Path
    exp_type: str = ANY  # EXP_TYPE the reference declares (a|b: any of them)


def context_name(context_number: int) -> str:
    return f"{OBSERVATORY}_{context_number:04d}.pmap"


def all_reference_types() -> list[str]:
    """Every JWST reference type crds knows (all instruments, pars-* included).

    stpipe asks CRDS about every type any step of a pipeline declares, MIRI-only
    ones too; a type missing from the imap is an error, an 'N/A' one is skipped.
    """
    from crds.jwst import TYPES

    known = [t for t in TYPES.filekinds if t != "all"]
    return known + [t for t in NEWER_PARAMETER_TYPES if t not in known]


def _read_selection(reftype: str, path: Path) -> _Selection:
    """Selection keys from the reference file's own header (FITS, ASDF or JSON), as CRDS certify would."""
    if path.suffix == ".json":
        import json

        # JSON references (EXTRACT1D, ...) carry their CRDS keywords at the top level.
        tree = json.loads(path.read_text())
        values = tuple(tree.get(k) for k in ("instrument", "detector", "subarray", "useafter"))
        exp_type = tree.get("exp_type")
    elif path.suffix == ".asdf":
        import asdf

        with asdf.open(path, lazy_load=True, memmap=False) as af:
            meta = af.tree.get("meta", {})
            instrument = meta.get("instrument", {})
            values = (
                instrument.get("name"),
                instrument.get("detector"),
                meta.get("subarray", {}).get("name"),
                meta.get("useafter"),
            )
            exposure = meta.get("exposure", {})
            exp_type = exposure.get("type") or exposure.get("p_exptype")
    else:
        from astropy.io import fits

        header = fits.getheader(path, 0)
        values = tuple(header.get(k) for k in ("INSTRUME", "DETECTOR", "SUBARRAY", "USEAFTER"))
        exp_type = header.get("EXP_TYPE") or header.get("P_EXP_TY")  # p_exptype's keyword
    instrument, detector, subarray, useafter = values
    if not instrument or not useafter:
        raise ValueError(f"{path}: a reference needs instrument name and useafter")
    if subarray in (None, "", "GENERIC", "ANY"):
        subarray = ANY
    if detector in (None, "", "ANY", "MULTIPLE"):
        detector = ANY
    return _Selection(
        instrument=str(instrument).upper(),
        reftype=reftype.lower(),
        detector=str(detector).upper() if detector != ANY else ANY,
        subarray=str(subarray).upper() if subarray != ANY else ANY,
        useafter=_crds_date(str(useafter)),
        source=path,
        exp_type=str(exp_type).strip("|").upper() if exp_type else ANY,
    )


def _served(path: Path, exposures: Iterable[tuple[str, str, str, str]]
            ) -> dict[str, list[tuple[str, str, str]]]:
    """instrument -> (detector, subarray, exp type) of every exposure this
    cache serves: ``exposures`` and those its earlier contexts were given."""
    import json

    known = {tuple(e) for e in json.loads(path.read_text())} if path.exists() else set()
    known |= {tuple(str(v).upper() for v in e) for e in exposures}
    path.write_text(json.dumps(sorted(known)) + "\n")
    served: dict[str, list[tuple[str, str, str]]] = {}
    for instrument, detector, subarray, exp_type in sorted(known):
        served.setdefault(instrument, []).append((detector, subarray, exp_type))
    return served


def _crds_date(useafter: str) -> str:
    text = useafter.strip().replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
    raise ValueError(f"unreadable USEAFTER {useafter!r}")


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_reference(sel: _Selection, refdir: Path) -> str:
    """Copy `sel.source` into the cache under a CRDS name; reuse an identical file."""
    prefix = f"{OBSERVATORY}_{sel.instrument.lower()}_{sel.reftype}_"
    ext = sel.source.suffix
    existing = sorted(refdir.glob(f"{prefix}[0-9][0-9][0-9][0-9]{ext}"))
    digest = _sha1(sel.source)
    for candidate in existing:
        if candidate.stat().st_size == sel.source.stat().st_size and _sha1(candidate) == digest:
            return candidate.name
    serial = max((int(p.stem[-4:]) for p in existing), default=0) + 1
    name = f"{prefix}{serial:04d}{ext}"
    shutil.copyfile(sel.source, refdir / name)
    return name


def _format(header: dict, selector_text: str) -> str:
    """Mapping text with a correct sha1sum (crds's: sha1 of every other line)."""
    from crds.core import utils

    lines = ["header = {\n"]
    for key in sorted(header):
        lines.append(f"    {key!r} : {header[key]!r},\n")
    lines.append("    'sha1sum' : 'SHA1SUM',\n")
    lines.append("}\n\n")
    text = "".join(lines) + selector_text
    body = "".join(line for line in text.splitlines(True) if "sha1sum" not in line)
    return text.replace("'SHA1SUM'", repr(utils.str_checksum(body)))


# Where the cache keeps the exposures it serves (see build_crds_cache).
EXPOSURES_FILE = "calstream_exposures.json"


def _matches(row: tuple[str, ...], exposure: tuple[str, str, str]) -> bool:
    """Whether an rmap row (detector, subarray[, exp type]) matches an
    exposure's (detector, subarray, exp type), as crds matches: 'N/A' is any
    value, 'A|B' either. A row without an exposure type matches any."""
    return all(key == ANY or value in key.split("|")
               for key, value in zip(row, exposure, strict=False))


def _unserved(rows: dict, exposures: Iterable[tuple[str, str, str]]) -> list[tuple[str, ...]]:
    """The exposures no row of a type matches, as rows of their own.

    A synthetic mode writes the references its exposures use; every other
    type is 'N/A' to them. Where no exposure of the instrument has the type,
    the imap says so; where another mode of it has one, crds found no match
    instead and the exposure's pipeline failed: `calstream simulate --modes
    dhs mosaic` parked every NIRCam image's image2 on the DHS's
    WAVELENGTHRANGE, and the DHS's spec2 on the images' FLAT. So these get
    'N/A' rows, as CRDS's own rmaps have. Only the exposures the cache serves:
    any other still finds no match, as with a reference missing."""
    return sorted({e for e in exposures if not any(_matches(r, e) for r in rows)})


def _rmap_text(name: str, instrument: str, reftype: str, rows: dict, derived_from: str,
               exposures: Iterable[tuple[str, str, str]] = ()) -> str:
    from crds.jwst import TYPES

    def item(field: str, default: str) -> str:
        try:
            return TYPES.get_item(instrument, reftype, field)
        except KeyError:
            return default

    header = {
        "classes": ("Match", "UseAfter"),
        "derived_from": derived_from,
        "file_ext": item("file_ext", ".fits"),
        "filekind": reftype.upper(),
        "filetype": item("filetype", reftype.upper()),
        "instrument": instrument,
        "mapping": "REFERENCE",
        "name": name,
        "observatory": OBSERVATORY.upper(),
        "parkey": (MATCH_KEYS, USEAFTER_KEYS),
        "suffix": item("suffix", reftype),
        "text_descr": item("text_descr", reftype),
    }
    unserved = _unserved(rows, exposures)
    rows = rows if unserved else _match_rows(rows)  # their exposure type tells them apart
    if len(next(iter(rows))) == 3:
        header["parkey"] = ((*MATCH_KEYS, EXP_TYPE_KEY), USEAFTER_KEYS)
    body = ["selector = Match({\n"]
    for match in sorted(rows):
        body.append(f"    {match!r} : UseAfter({{\n")
        for date in sorted(rows[match]):
            body.append(f"        {date!r} : {rows[match][date]!r},\n")
        body.append("    }),\n")
    for exposure in unserved:
        body.append(f"    {exposure!r} : {NOT_APPLICABLE!r},\n")
    body.append("})\n")
    return _format(header, "".join(body))


def _match_rows(rows: dict) -> dict:
    """(detector, subarray, exp_type) rows as the rmap's Match keys: the exposure
    type only where one detector and subarray has references differing by it."""
    by_place: dict[tuple[str, str], set[str]] = {}
    for detector, subarray, exp_type in rows:
        by_place.setdefault((detector, subarray), set()).add(exp_type)
    if any(len(types) > 1 for types in by_place.values()):
        return rows
    return {(detector, subarray): dates for (detector, subarray, _), dates in rows.items()}


def _dict_text(header: dict, selector: dict) -> str:
    body = ["selector = {\n"]
    for key in sorted(selector):
        body.append(f"    {key!r} : {selector[key]!r},\n")
    body.append("}\n")
    return _format(header, "".join(body))


def _write_server_config(config_dir: Path, context: str, operational: bool) -> None:
    path = config_dir / "server_config"
    info: dict = {}
    if path.exists():
        info = ast.literal_eval(path.read_text())
    if operational or "operational_context" not in info:
        info["operational_context"] = context
        info["latest_context"] = context
    info.update(
        {
            "observatory": OBSERVATORY,
            "edit_context": context,
            "bad_files_list": [],
            "force_remote_mode": False,
            "last_synced": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    path.write_text(pprint.pformat(info) + "\n")


def build_crds_cache(
    crds_path: str | Path,
    references: Mapping[str, Iterable[str | Path]],
    *,
    context_number: int = 1,
    operational: bool = True,
    exposures: Iterable[tuple[str, str, str, str]] = (),
) -> str:
    """Write context ``jwst_<context_number>.pmap`` selecting `references`; return its name.

    `references` maps a reference type ("gain", ...) to files; each file's
    header (INSTRUME, DETECTOR, SUBARRAY, USEAFTER) says what it applies to.
    Every other JWST reference type is 'N/A'. ``exposures``: (instrument,
    detector, subarray, exp type) of the files the cache serves, kept in the
    cache for its later contexts: a type of their instrument that selects
    none of them is 'N/A' to it (`_unserved`). With `operational`, the new
    context also becomes the cache's default (what crds uses when CRDS_CONTEXT
    is not set); otherwise the previous default stays.
    """
    from crds.core import rmap

    if context_number < 1:
        raise ValueError("context_number starts at 1")
    root = Path(crds_path)
    config_dir = root / "config" / OBSERVATORY
    map_dir = root / "mappings" / OBSERVATORY
    ref_dir = root / "references" / OBSERVATORY
    for d in (config_dir, map_dir, ref_dir):
        d.mkdir(parents=True, exist_ok=True)
    (config_dir / "ref_cache_subdir_mode").write_text("flat\n")
    served = _served(config_dir / EXPOSURES_FILE, exposures)

    # instrument -> reftype -> (detector, subarray, exp_type) -> useafter -> cached name
    table: dict[str, dict[str, dict[tuple[str, str], dict[str, str]]]] = {}
    for reftype, paths in references.items():
        for path in paths:
            sel = _read_selection(reftype, Path(path))
            rows = table.setdefault(sel.instrument, {}).setdefault(sel.reftype, {})
            dates = rows.setdefault((sel.detector, sel.subarray, sel.exp_type), {})
            if sel.useafter in dates:
                raise ValueError(
                    f"two {reftype} references for {sel.detector}/{sel.subarray}/{sel.exp_type} "
                    f"use after {sel.useafter}: {dates[sel.useafter]} and {sel.source.name}"
                )
            dates[sel.useafter] = _file_reference(sel, ref_dir)

    serial = f"{context_number:04d}"
    previous = f"{context_number - 1:04d}" if context_number > 1 else None
    pmap_name = context_name(context_number)
    types = all_reference_types()
    instruments: dict[str, str] = {}
    for instrument, by_type in sorted(table.items()):
        instr = instrument.lower()
        selector = dict.fromkeys(types, NOT_APPLICABLE)
        for reftype, rows in sorted(by_type.items()):
            name = f"{OBSERVATORY}_{instr}_{reftype}_{serial}.rmap"
            derived = (
                f"{OBSERVATORY}_{instr}_{reftype}_{previous}.rmap" if previous else "calstream"
            )
            (map_dir / name).write_text(_rmap_text(name, instrument, reftype, rows, derived,
                                                   served.get(instrument, ())))
            selector[reftype] = name
        imap_name = f"{OBSERVATORY}_{instr}_{serial}.imap"
        imap_header = {
            "derived_from": f"{OBSERVATORY}_{instr}_{previous}.imap" if previous else "calstream",
            "file_ext": ".imap",
            "instrument": instrument,
            "mapping": "INSTRUMENT",
            "name": imap_name,
            "observatory": OBSERVATORY.upper(),
            "parkey": ("REFTYPE",),
        }
        (map_dir / imap_name).write_text(_dict_text(imap_header, selector))
        instruments[instrument] = imap_name

    pmap_header = {
        "derived_from": context_name(context_number - 1) if previous else "calstream",
        "mapping": "PIPELINE",
        "name": pmap_name,
        "observatory": OBSERVATORY.upper(),
        "parkey": ("META.INSTRUMENT.NAME",),
    }
    (map_dir / pmap_name).write_text(_dict_text(pmap_header, instruments))

    # Parse the whole context back (checksums included) before announcing it.
    rmap.Mapping.from_file(pmap_name, path=str(map_dir))
    _write_server_config(config_dir, pmap_name, operational)
    return pmap_name


def derive_context(crds_path: str | Path, replace: Mapping[str, Iterable[str | Path]], *,
                   operational: bool = False) -> str:
    """A new context of the cache at ``crds_path``: the newest context's references
    with each reference type of ``replace`` ("pars-tweakregstep": [file]) swapped
    for the given files. The earlier contexts stay as they are (a test pins the
    new one with CRDS_CONTEXT); its name is returned."""
    root = Path(crds_path)
    map_dir = root / "mappings" / OBSERVATORY
    ref_dir = root / "references" / OBSERVATORY
    newest = max(int(p.stem.rsplit("_", 1)[1]) for p in map_dir.glob(f"{OBSERVATORY}_*.pmap"))
    by_type: dict[str, list[Path]] = {}
    # This module wrote every rmap of a context with the context's serial:
    # jwst_<instrument>_<reftype>_<serial>.rmap, naming its files in quotes.
    for rmap_path in sorted(map_dir.glob(f"{OBSERVATORY}_*_{newest:04d}.rmap")):
        reftype = rmap_path.stem.split("_", 2)[2].rsplit("_", 1)[0]
        for name in sorted(set(re.findall(rf"'({OBSERVATORY}_[\w.+-]+)'", rmap_path.read_text()))):
            if (ref_dir / name).is_file():
                by_type.setdefault(reftype, []).append(ref_dir / name)
    references = {**by_type, **{t: [Path(p) for p in files] for t, files in replace.items()}}
    return build_crds_cache(root, references, context_number=newest + 1,
                            operational=operational)
