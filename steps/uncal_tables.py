"""An uncal file's binary tables and its ASDF extension, as stdatamodels will read them.

stdatamodels keeps a model's metadata tree in an extension named ASDF: a
binary table of one row of bytes (an image of bytes in older files), which
it reads whole through astropy and opens with the asdf library. An uncal
file has other binary tables too (GROUP, INT_TIMES), which it reads as
records. Neither the door's walk nor its identity check read a table's
columns: a forged one (``TFORM1 = 1.5``, ``TTYPE1 = 7``, no TTYPE1, a card
astropy cannot parse among them) or ASDF bytes that are no ASDF file passed
the door and failed in detector1, as a ``permanent_failure`` instead of a
``bad_file``. The door now reads every table's columns as astropy will
(table_columns.py; a tile-compressed SCI's are tile_table.py's) and the
first bytes the asdf library looks for.

The tree itself is not parsed here: that is YAML, in the daemon's main
process, for every arrival; a broken tree still fails in detector1, with
the asdf library's reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from astropy.io import fits

from calstream.steps.fitsfile import HduLayout
from calstream.steps.regular_files import open_regular_file
from calstream.steps.table_columns import TableError, row_columns

# What every ASDF file starts with (the asdf library's "Does not appear to be
# a ASDF file" otherwise).
ASDF_MAGIC = b"#ASDF "


def uncal_table_problem(path: Path, hdus: Iterable[HduLayout]) -> str | None:
    """Why stdatamodels could not read a binary table of the file, or its
    ASDF extension (the first HDU named ASDF, as ``hdul["ASDF"]`` finds
    it); None if it can (or there is none: it then starts an empty tree)."""
    asdf_seen = False
    with open_regular_file(path) as f:  # never waits on a FIFO (fitsfile.py)
        for hdu in hdus:
            is_asdf = bool(hdu.index) and hdu.key[0] == "ASDF" and not asdf_seen
            asdf_seen = asdf_seen or is_asdf
            # A table's columns are made from its cards; any other kind of
            # extension astropy hands over as its bytes. A tile-compressed
            # SCI is a table astropy reads as an image (tile_table.py).
            table = (bool(hdu.index) and str(hdu.xtension).strip().upper() == "BINTABLE"
                     and hdu.key != ("SCI", 1))
            name = f"HDU {hdu.index} ({hdu.extname})"
            if table:
                f.seek(hdu.header_offset)
                problem = _columns_problem(f.read(hdu.header_size))
                if problem is not None:
                    return f"{name}: {problem}"
            if is_asdf:
                f.seek(hdu.data_offset)
                start = f.read(len(ASDF_MAGIC)) if hdu.data_size >= len(ASDF_MAGIC) else b""
                if start != ASDF_MAGIC:
                    return f"{name}: holds no ASDF file (it starts {start!r}, not {ASDF_MAGIC!r})"
    return None


def _columns_problem(raw_header: bytes) -> str | None:
    try:
        header = fits.Header.fromstring(raw_header)
        unnamed = [n for n, c in enumerate(row_columns(header), 1) if not (c.name or "").strip()]
    except (TableError, fits.VerifyError, ValueError) as exc:  # a card astropy cannot parse
        return f"the table cannot be read: {str(exc).splitlines()[0]}"
    if unnamed:  # astropy's records of the row then fail: "field names must be strings"
        return f"the table has no TTYPE{unnamed[0]}"
    return None
