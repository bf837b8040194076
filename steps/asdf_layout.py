"""Whether an ASDF file is whole, from its structure alone (no array read).

The asdf library cannot say: opened lazily, a file cut in its binary blocks
opens without a word (it reads the block index, finds none, walks the
headers it has and stops), and only a later read of a missing block fails,
deep in a pipeline, as something else. What an ASDF file declares about
itself answers cheaply (ASDF standard 1.x, "Block"): the YAML tree ends with
a ``...`` line; each binary block after it starts with a magic token and a
header that gives the bytes the block takes (``allocated_size``); the tree
names its blocks by index (``source: N``). The file is whole when the tree is
terminated, every block's declared bytes are present, and there are as many
blocks as the tree uses. Reads the tree and one header per block: the cost
does not depend on the arrays' size.
"""

from __future__ import annotations

import os
import re
import struct

from calstream.steps.regular_files import open_regular_file

ASDF_MAGIC = b"#ASDF "
BLOCK_MAGIC = b"\xd3BLK"
# flags (4), compression (4), allocated_size (8), used_size (8), data_size (8), checksum (16)
_BLOCK_HEADER = struct.Struct(">I4sQQQ16s")
_TREE_END = re.compile(rb"\r?\n\.\.\.\r?\n")
# ndarray nodes name their block by a mapping key, "source: 3", in block or flow
# style (negative: counted from the end; a string: an external file, not this
# one's). Only at a key's place: words in a description do not count.
_SOURCE = re.compile(rb"(?:^[ \t]*|[{,][ \t]*)source:[ \t]*(\d+)\b", re.MULTILINE)
# A tree larger than this is not a reference file's (they hold their arrays in blocks).
MAX_TREE_BYTES = 64 << 20


def asdf_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the ASDF file at ``path`` is not whole, or None when it is.
    OSError (missing, unreadable, not a regular file) propagates."""
    with open_regular_file(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(min(size, MAX_TREE_BYTES))
        if not head.startswith(ASDF_MAGIC):
            return "not an ASDF file (no #ASDF header)"
        end = _TREE_END.search(head)
        if end is None:
            return f"its YAML tree has no end marker ('...'): cut short at {size} bytes?"
        needed = max((int(m) + 1 for m in _SOURCE.findall(head, 0, end.start())), default=0)
        return _blocks_problem(f, end.end(), size, needed)


def _blocks_problem(f, position: int, size: int, needed: int) -> str | None:
    """Walk the block headers from ``position``: every declared byte present,
    at least ``needed`` blocks."""
    count = 0
    while True:
        f.seek(position)
        start = f.read(6)
        if start[:4] != BLOCK_MAGIC:
            break  # the block index, padding or the end of the file
        if len(start) < 6:
            return f"block {count} at byte {position}: its header is cut (file {size} bytes)"
        (header_size,) = struct.unpack(">H", start[4:6])
        header = f.read(header_size)
        if header_size < _BLOCK_HEADER.size or len(header) < header_size:
            return f"block {count} at byte {position}: its header is cut (file {size} bytes)"
        flags, _, allocated, _, _, _ = _BLOCK_HEADER.unpack_from(header)
        end = position + 6 + header_size + allocated
        if end > size:
            return (f"block {count} declares {allocated} bytes but only "
                    f"{max(0, size - position - 6 - header_size)} are present "
                    f"(file {size} bytes, expected at least {end})")
        count += 1
        if flags & 1:  # a streamed block runs to the end of the file
            break
        position = end
    if count < needed:
        return f"the tree uses {needed} blocks but the file holds {count} (file {size} bytes)"
    return None
