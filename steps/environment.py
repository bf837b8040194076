"""Environment variables set for a while, then restored as they were."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """``values`` set for the duration of the block; a value of None unsets
    the variable. Every variable named is restored afterwards, to its
    value or its absence, even when the block raises.

    The environment is the process's: do not run anything that reads these
    variables in other threads meanwhile.
    """
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
