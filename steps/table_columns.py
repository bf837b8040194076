"""The columns of a FITS binary table, read from its header as astropy reads them.

A table's header says what each row holds (TFIELDS; TTYPEn, TFORMn), and
astropy builds its columns from that only when the table is read: a forged
format passed the door and failed in detector1, which reads two tables, the
ASDF extension and GROUP (uncal_tables.py) and, in a tile-compressed SCI, its tile
table (tile_table.py). The door reads the columns itself, as bytes in a
row, and refuses what astropy would: a format it does not know, a name that
is no string, a field missing, columns that do not fill the row NAXIS1 says.

Pure: a header (a mapping, as astropy parses it) in, ``TableError`` out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# Bytes of one element of each TFORM type code (X: bits, counted apart).
_ELEMENT = {"L": 1, "B": 1, "I": 2, "J": 4, "K": 8, "A": 1, "E": 4, "D": 8, "C": 8, "M": 16}
# Descriptors: (count, offset) as two big-endian 32-bit (P) or 64-bit (Q) integers.
_DESCRIPTOR = {"P": np.dtype(">i4"), "Q": np.dtype(">i8")}
# rT (fixed: r elements of type T) or rPt(max) / rQt(max) (a descriptor of
# type t elements); astropy reads the same forms (r of a descriptor is 0 or 1).
_TFORM = re.compile(r"(\d*)([LXBIJKAEDCM])\S*|([01]?)([PQ])([LBIJKAEDCM])(?:\(\d*\))?")


class TableError(ValueError):
    """A table's header that its reader could not make columns of."""


@dataclass(frozen=True)
class Column:
    name: str | None  # TTYPEn, None where absent
    offset: int  # bytes into a row
    width: int  # bytes in a row
    code: str  # the TFORM type code: "B", "J", ...; of the elements, for a descriptor
    descriptor: np.dtype | None = None  # a variable-length column's (count, offset) pair
    element: int = 1  # bytes of one element (of the heap's, for a descriptor)


def row_columns(header: Mapping[str, Any]) -> list[Column]:
    """Every column of the table, in order; they must fill the row exactly."""
    fields = count(header, "TFIELDS")
    at, columns = 0, []
    for n in range(1, fields + 1):
        name, tform = header.get(f"TTYPE{n}"), header.get(f"TFORM{n}")
        if name is not None and not isinstance(name, str):
            raise TableError(f"TTYPE{n} = {name!r} is no column name")
        match = _TFORM.fullmatch(tform.strip().upper()) if isinstance(tform, str) else None
        if match is None:
            raise TableError(f"TFORM{n} = {tform!r} is no column format")
        repeat, code, vrepeat, vcode, element = match.groups()
        if vcode:
            pair = _DESCRIPTOR[vcode]
            width = 0 if vrepeat == "0" else 2 * pair.itemsize
            columns.append(Column(name, at, width, element, pair, _ELEMENT[element]))
        else:
            repeat = int(repeat) if repeat else 1
            width = -(-repeat // 8) if code == "X" else repeat * _ELEMENT[code]
            columns.append(Column(name, at, width, code, None, _ELEMENT.get(code, 1)))
        at += width
    if at != count(header, "NAXIS1"):
        raise TableError(f"the columns' formats make rows of {at} bytes, "
                         f"not NAXIS1 = {header.get('NAXIS1')!r}")
    return columns


def count(header: Mapping[str, Any], key: str, default: int | None = None, *,
          positive: bool = False) -> int:
    """The header's ``key``, an integer of at least 0 (1 if ``positive``), or TableError."""
    value = header.get(key, default)
    if type(value) is not int or value < (1 if positive else 0):
        raise TableError(f"{key} = {value!r} is no {'positive ' if positive else ''}count")
    return value
