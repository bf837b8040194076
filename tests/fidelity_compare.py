"""Product against product: which extension differs, and by how much.

`compare_products(ours, theirs)` lists every difference between two products
of the same kind (FITS, ECSV tables, JSON associations):

* FITS: the list of HDUs; every HDU's data compared as the bytes the file
  holds (so a table's heap too), and, when they differ, how many elements
  differ and by how much; every header card; the ASDF extension's tree,
  value by value, and its binary blocks (the arrays stored in the tree).
* ECSV: every column's values bit by bit, and the table's metadata.

Each difference says where it is (``SCI data``, ``PRIMARY header DATE``,
``ASDF meta.filename``, ``column FLUX``, ``meta.date``) and whether it is
data or metadata. `unexplained(differences, allowed)` keeps those that no
pattern of an allow-list matches: a fidelity test asserts that it is empty.
"""

from __future__ import annotations

import fnmatch
import io
import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DATA, METADATA = "data", "metadata"
_BLOCK_MAGIC = b"\xd3BLK"


# Metadata that may differ between a daemon product and its direct twin
# (fnmatch patterns on `Difference.where`), each with why it must; every
# fidelity test (test_fidelity, test_wfss, test_dark_guider, test_new_modes)
# uses this one list.
ALLOWED = {
    "PRIMARY header DATE": "when the file was written",
    "ASDF meta.date": "when the file was written (DATE, in the tree)",
    "ASDF spec.*.meta.date": "the same date, kept by each spectrum of an x1d",
    "ASDF slits.*.meta.date": "the same date, kept by each slit of a WFSS cal (one per "
                              "source) or a DHS calints (one per stripe)",
    # A WFSS spec2 x1d names the cal file it extracted from by its full path,
    # as written: the daemon's is in the run's scratch directory
    # (<products>/<program>/<obs>/.tmp/<run>/, moved into place after), the
    # direct run's in its own directory. test_wfss checks the file names agree.
    "EXTRACT1D* header FILENAME": "the full path of the cal file extracted (see above)",
    "ASDF spec.*.filename": "the same path, in the tree (see above)",
    "ASDF cal_logs*": "the run's log lines: wall-clock times, and a direct run logs "
                      "its configuration (the daemon's workers configure logging themselves)",
    "ASDF _fits_hash": "stdatamodels' hash of the other HDUs, headers included: follows DATE",
    "ASDF header NAXIS1": "the ASDF extension's length: follows the tree's dates and logs",
    "ASDF header TFORM1": "the same length, as the column format",
    "ASDF history.extensions (order)": "the same asdf extensions, listed in the order the "
                                       "writing process first used them (warm workers)",
    # Associations: the planner writes each one when its members are
    # calibrated, named as DMS names them (jwPPPPP-<acid>_<time>_<type>_<seq>);
    # asn_generate's command line names them after its pool and a counter.
    "PRIMARY header ASNPOOL": "the association's pool name (see above)",
    "ASDF meta.asn.pool_name": "the association's pool name (see above)",
    "PRIMARY header ASNTABLE": "the association's file name (see above)",
    "ASDF meta.asn.table_name": "the association's file name (see above)",
    # A level-3 product's HDRTAB is its members' primary headers, one row each.
    "HDRTAB column DATE": "the members' DATE (see DATE)",
    "HDRTAB column ASNPOOL": "the members' ASNPOOL (see ASNPOOL)",
    "HDRTAB column ASNTABLE": "the members' ASNTABLE (see ASNTABLE)",
    "ASDF hdrtab.datatype.*.datatype.1": "a HDRTAB string column's width: follows its "
                                         "longest value (the association's file name)",
    "HDRTAB header TFORM*": "the same widths, as the column formats",
    "HDRTAB header NAXIS1": "HDRTAB's row length: the sum of those widths",
    "meta.date": "when a catalog was written (the ECSV header's date)",
}


@dataclass(frozen=True)
class Difference:
    where: str  # "SCI data", "PRIMARY header DATE", "ASDF meta.date", "column FLUX"
    kind: str  # DATA or METADATA
    detail: str  # what differs, and by how much

    def __str__(self) -> str:
        return f"{self.where} [{self.kind}]: {self.detail}"


def compare_products(ours: str | Path, theirs: str | Path) -> list[Difference]:
    """Every difference between two products of the same kind."""
    ours, theirs = Path(ours), Path(theirs)
    if ours.suffix == ".fits":
        return compare_fits(ours, theirs)
    if ours.suffix == ".ecsv":
        return compare_ecsv(ours, theirs)
    if ours.suffix == ".json":
        return _compare_trees(json.loads(ours.read_text()), json.loads(theirs.read_text()), "")
    same = ours.read_bytes() == theirs.read_bytes()
    return [] if same else [Difference("file", DATA, "the bytes differ")]


def unexplained(differences: Iterable[Difference],
                allowed: Mapping[str, str]) -> list[Difference]:
    """The differences no pattern of ``allowed`` (fnmatch on `where` -> why) explains."""
    return [d for d in differences
            if not any(fnmatch.fnmatchcase(d.where, pattern) for pattern in allowed)]


# --- FITS ---------------------------------------------------------------------------------


def _hdu_name(hdu, index: int) -> str:
    name = hdu.name or f"HDU{index}"
    return name if hdu.ver in (None, 1) else f"{name},{hdu.ver}"


def _raw_data(hdulist, index: int, path: Path) -> bytes:
    """The data bytes of HDU ``index`` exactly as the file holds them (heap included)."""
    info = hdulist.fileinfo(index)
    with open(path, "rb") as f:
        f.seek(info["datLoc"])
        return f.read(info["datSpan"])


def compare_fits(ours: Path, theirs: Path) -> list[Difference]:
    from astropy.io import fits

    found: list[Difference] = []
    with fits.open(ours, memmap=False, do_not_scale_image_data=True) as a, \
            fits.open(theirs, memmap=False, do_not_scale_image_data=True) as b:
        names_a = [_hdu_name(h, i) for i, h in enumerate(a)]
        names_b = [_hdu_name(h, i) for i, h in enumerate(b)]
        if names_a != names_b:
            found.append(Difference("HDU list", DATA, f"{names_a} != {names_b}"))
        index_b = {n: i for i, n in enumerate(names_b)}
        for i, name in enumerate(names_a):
            if name not in index_b:
                continue
            j = index_b[name]
            found += _compare_headers(a[i].header, b[j].header, name)
            raw_a, raw_b = _raw_data(a, i, ours), _raw_data(b, j, theirs)
            if name == "ASDF":
                found += compare_asdf(_asdf_bytes(a[i]), _asdf_bytes(b[j]))
            elif raw_a != raw_b:
                found += _data_differences(name, a[i].data, b[j].data)
    return found


def _compare_headers(a, b, hdu: str) -> list[Difference]:
    def cards(header) -> dict[str, Any]:
        counts: dict[str, int] = {}
        out = {}
        for card in header.cards:
            key = card.keyword
            counts[key] = counts.get(key, 0) + 1
            out[key if counts[key] == 1 else f"{key}[{counts[key]}]"] = card.value
        return out

    ca, cb = cards(a), cards(b)
    return [Difference(f"{hdu} header {key}", METADATA, f"{ca.get(key)!r} != {cb.get(key)!r}")
            for key in sorted(set(ca) | set(cb)) if not _same_value(ca.get(key), cb.get(key))]


def _same_value(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
        return True
    return type(x) is type(y) and x == y


def _data_differences(name: str, a, b) -> list[Difference]:
    """An HDU's differing data: a table column by column (a level-3 product's
    HDRTAB holds its members' headers), an image as a whole."""
    names = getattr(getattr(a, "dtype", None), "names", None)
    if names and b is not None and b.dtype.names == names:
        found = [Difference(f"{name} column {n}", DATA, _describe_array(np.asarray(a[n]),
                                                                       np.asarray(b[n])))
                 for n in names if not _same_array(np.asarray(a[n]), np.asarray(b[n]))]
        return found or [Difference(f"{name} data", DATA,
                                    "the same values, other bytes (column widths)")]
    return [Difference(f"{name} data", DATA, _describe(a, b))]


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and (a.tobytes() == b.tobytes() if a.dtype == b.dtype
                                   else bool(np.all(a == b)))


def _describe(a, b) -> str:
    """How two arrays (images or tables) differ: per column, count and largest difference."""
    if a is None or b is None:
        return f"one HDU has no data ({type(a).__name__} vs {type(b).__name__})"
    if a.dtype.names:
        if a.dtype.names != b.dtype.names:
            return f"columns {a.dtype.names} != {b.dtype.names}"
        parts = [f"{n}: {_describe_array(np.asarray(a[n]), np.asarray(b[n]))}"
                 for n in a.dtype.names
                 if np.asarray(a[n]).tobytes() != np.asarray(b[n]).tobytes()]
        return "; ".join(parts) or "the same values, other bytes (heap layout)"
    return _describe_array(np.asarray(a), np.asarray(b))


def _describe_array(a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype} != {b.shape} {b.dtype}"
    if a.dtype.kind not in "fciub" or a.dtype == object:
        return f"{int(np.sum(a != b))} of {a.size} elements differ"
    fa, fb = a.astype(np.float64), b.astype(np.float64)
    nan_a, nan_b = np.isnan(fa), np.isnan(fb)
    differ = (fa != fb) & ~(nan_a & nan_b)
    both = differ & ~nan_a & ~nan_b
    largest = float(np.max(np.abs(fa[both] - fb[both]))) if both.any() else 0.0
    scale = float(np.max(np.abs(fb[both]))) if both.any() else 0.0
    return (f"{int(differ.sum())} of {a.size} elements differ "
            f"({int((nan_a != nan_b).sum())} NaN in one only), largest difference "
            f"{largest:.3g} (largest value among them {scale:.3g})")


# --- ASDF (the tree stored in a FITS file's ASDF extension) --------------------------------


def _asdf_bytes(hdu) -> bytes:
    return np.asarray(hdu.data).tobytes()


def _split_asdf(raw: bytes) -> tuple[str, list[bytes]]:
    """An ASDF file's YAML tree and its binary blocks (their data, uncompressed as written)."""
    start = raw.find(_BLOCK_MAGIC)
    tree = raw if start < 0 else raw[:start]
    blocks = []
    pos = start
    while 0 <= pos < len(raw) and raw[pos:pos + 4] == _BLOCK_MAGIC:
        (header_size,) = struct.unpack(">H", raw[pos + 4:pos + 6])
        header = raw[pos + 6:pos + 6 + header_size]
        allocated, used = struct.unpack(">QQ", header[8:24])
        data_start = pos + 6 + header_size
        blocks.append(raw[data_start:data_start + used])
        pos = data_start + allocated
    return tree.decode("utf-8", errors="replace"), blocks


def _tree(text: str) -> Any:
    """The YAML tree with every tag kept as a "!tag" key (mappings) and no object built."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader, suffix, node):
        if isinstance(node, yaml.MappingNode):
            return {"!tag": node.tag, **loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", tagged)
    Loader.add_multi_constructor("tag:", tagged)
    # The YAML document ends with "..."; anything after (a block index) is not YAML.
    end = text.find("\n...")
    text = text if end < 0 else text[:end + 4]
    # An alias (asdf's "*id001") stays its name: the anchored node is compared
    # where it is written, and a node may refer to itself (a DHS WCS's constant
    # that is its own inverse), which no tree of dicts could hold.
    text = re.sub(r"(?<=[\s\[,])\*(id\d+)\b", r"'*\1'", text)
    return yaml.load(text, Loader=Loader)


def compare_asdf(ours: bytes, theirs: bytes) -> list[Difference]:
    tree_a, blocks_a = _split_asdf(ours)
    tree_b, blocks_b = _split_asdf(theirs)
    tree_a, tree_b = _tree(tree_a), _tree(tree_b)
    found = []
    if _extension_uris(tree_a) != _extension_uris(tree_b) and \
            sorted(_extension_uris(tree_a)) == sorted(_extension_uris(tree_b)):
        # The same extensions, listed in the order the writing process first used them.
        found.append(Difference("ASDF history.extensions (order)", METADATA,
                                "the same extensions in another order"))
        for tree in (tree_a, tree_b):
            tree["history"]["extensions"].sort(key=lambda e: e.get("extension_uri", ""))
    found += _compare_trees(tree_a, tree_b, "ASDF ")
    if len(blocks_a) != len(blocks_b):
        found.append(Difference("ASDF blocks", DATA, f"{len(blocks_a)} != {len(blocks_b)}"))
    for i, (x, y) in enumerate(zip(blocks_a, blocks_b, strict=False)):
        if x != y:
            found.append(Difference(f"ASDF block {i}", DATA,
                                    f"{len(x)} and {len(y)} bytes, "
                                    f"{sum(p != q for p, q in zip(x, y, strict=False))} differ"))
    return found


def _extension_uris(tree: Any) -> list[str]:
    extensions = (tree.get("history") or {}).get("extensions") or [] \
        if isinstance(tree, dict) else []
    return [e.get("extension_uri", "") for e in extensions if isinstance(e, dict)]


def _compare_trees(a: Any, b: Any, prefix: str, path: str = "", in_array: bool = False
                   ) -> list[Difference]:
    where = f"{prefix}{path.lstrip('.')}" or f"{prefix}(root)"
    kind = DATA if in_array else METADATA
    if isinstance(a, dict) and isinstance(b, dict):
        in_array = in_array or "ndarray" in str(a.get("!tag", ""))
        found = []
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                found.append(Difference(f"{where}.{key}".replace(" .", " "),
                                        DATA if in_array else METADATA,
                                        "only in ours" if key in a else "only in theirs"))
            else:
                found += _compare_trees(a[key], b[key], prefix, f"{path}.{key}", in_array)
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [Difference(where, kind, f"{len(a)} items != {len(b)} items")]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _compare_trees(x, y, prefix, f"{path}.{i}", in_array)]
    if _same_value(a, b):
        return []
    return [Difference(where, kind, f"{_short(a)} != {_short(b)}")]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# --- ECSV tables (source catalogs, light curves) ------------------------------------------


def compare_ecsv(ours: Path, theirs: Path) -> list[Difference]:
    from astropy.table import Table

    a, b = Table.read(ours, format="ascii.ecsv"), Table.read(theirs, format="ascii.ecsv")
    found = []
    if a.colnames != b.colnames:
        found.append(Difference("columns", DATA, f"{a.colnames} != {b.colnames}"))
    if len(a) != len(b):
        found.append(Difference("rows", DATA, f"{len(a)} != {len(b)}"))
    else:
        for name in (n for n in a.colnames if n in b.colnames):
            found += _compare_column(a[name], b[name], name)
    found += _compare_trees(_plain(a.meta), _plain(b.meta), "", "meta")
    return found


def _compare_column(a, b, name: str) -> list[Difference]:
    values_a, values_b = _column_values(a), _column_values(b)
    if all(x.tobytes() == y.tobytes() and x.dtype == y.dtype
           for x, y in zip(values_a, values_b, strict=True)):
        return []
    return [Difference(f"column {name}", DATA, "; ".join(
        _describe_array(x, y) for x, y in zip(values_a, values_b, strict=True)))]


def _column_values(column) -> list[np.ndarray]:
    """A column as plain arrays: its values (sky coordinates by component) and mask."""
    if hasattr(column, "frame"):  # SkyCoord
        return [np.asarray(column.spherical.lon.deg), np.asarray(column.spherical.lat.deg)]
    values = np.asarray(getattr(column, "value", column))
    mask = np.asarray(getattr(column, "mask", np.zeros(len(column), bool)))
    if values.dtype == object:
        values = np.array([repr(v) for v in values])
    return [values, mask]


def _plain(value: Any) -> Any:
    """Table metadata as plain values (JSON round trip of whatever astropy keeps)."""
    return json.loads(json.dumps(value, default=str))


def describe(differences: Iterable[Difference]) -> str:
    """One line a difference, for assertion messages."""
    out = io.StringIO()
    for d in differences:
        out.write(f"  {d}\n")
    return out.getvalue()


# --- a daemon run's products against a directory of direct runs -----------------------------


def compare_records(records: Mapping[str, list[dict]], direct: Path,
                    stages: Iterable[str] = ("detector1", "stage2", "stage3"),
                    allowed: Mapping[str, str] = ALLOWED):
    """Every output of the daemon's provenance records (by stage) against its
    twin of the same name in ``direct``: ([(stage, file name, differences)],
    [failure], [direct products the daemon lacks]). Associations are left out:
    asn_generate names them otherwise (each test compares their members)."""
    stages = list(stages)
    compared, failures = [], []
    for stage in stages:
        for record in records[stage]:
            for output in record["event"]["outputs"]:
                ours = Path(output["path"])
                if output["suffix"] == "asn":
                    continue
                theirs = direct / ours.name
                if not theirs.exists():
                    failures.append(f"{stage} {ours.name}: no direct twin")
                    continue
                differences = compare_products(ours, theirs)
                compared.append((stage, ours.name, differences))
                left = unexplained(differences, allowed)
                if left:
                    failures.append(f"{stage} {ours.name}:\n{describe(left)}")
    made = {Path(o["path"]).name for s in stages for r in records[s]
            for o in r["event"]["outputs"]}
    extra = sorted(p.name for p in direct.iterdir()
                   if p.suffix in (".fits", ".ecsv") and p.name not in made)
    return compared, failures, extra
