"""The schemas' ``pattern`` keyword as JSON Schema reads it, for Python's ``re``.

JSON Schema's regular expressions are ECMA 262's, and so are jsonschema-rs's
(the fast validator): ``$`` is the end of the text. In Python's ``re`` it
also matches before a final newline, so the reference validator took
"jw01234001001_02101_00001_nrcb1\\n" for an exposure id where the fast one
did not; whichever of the two judged a message decided, and a lone surrogate
elsewhere in it (which only the reference can read) let the reference judge.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema.exceptions import ValidationError


@cache
def ecma_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled with each ``$`` anchor written ``\\Z`` (the end of
    the text, as in ECMA 262); escaped dollars and dollars in a character
    class are characters, as before."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            # Python reads "]" first in a class ("[]" or "[^]") as itself.
            lead = next((len(s) for s in ("^]", "]") if pattern.startswith(s, i + 1)), 0)
            c, i = pattern[i:i + 1 + lead], i + lead
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return re.compile("".join(out))


def pattern_keyword(validator: Any, pattern: str, instance: Any,
                    schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``pattern`` keyword, with ``ecma_pattern``'s ``$``."""
    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")
