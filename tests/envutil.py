"""Setting environment variables for a fixture's lifetime, and restoring them."""

import contextlib
import os


@contextlib.contextmanager
def environ(values: dict[str, str | None]):
    """``values`` set for the duration; a value of None unsets the variable."""
    saved = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
