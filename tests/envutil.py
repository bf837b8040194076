"""Setting environment variables for a fixture's lifetime, and restoring them."""

import contextlib
import os


@contextlib.contextmanager
def environ(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
