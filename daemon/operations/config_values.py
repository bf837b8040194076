"""How one setting's value is read, whatever it came from.

A TOML file gives typed values, the environment gives strings and argparse
gives whatever its ``type=`` made; each goes through the same parser for the
setting's kind, so ``CALSTREAM_POLLING=ture`` and ``polling = "ture"`` are the
same error, and ``workers = 4.5`` is refused rather than truncated.
"""

from __future__ import annotations

import difflib
import json
import math
import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


# Settings whose value is never printed (repr, `calstream config show`, errors).
SECRETS = frozenset({"security.sasl_password"})
MASK = "********"

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def mask(name: str, value: Any) -> Any:
    return MASK if name in SECRETS and value not in (None, "") else value


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_int(value: Any) -> int:
    # bool is an int in Python: `workers = true` is still nonsense.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a whole number, got {value!r}")


def parse_float(value: Any) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise ValueError(f"expected a number of seconds (or a count), got {value!r}")
    return number


def parse_str(value: Any) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ValueError(f"expected a non-empty string, got {value!r}")


def parse_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    return Path(parse_str(value)).expanduser()


def _inline(text: str) -> Any:
    """A TOML or JSON inline value (``{a = 1}``, ``{"a": 1}``, ``["x", "y"]``)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not a TOML or JSON inline value: {text!r} ({exc})") from None


def parse_list(value: Any, item) -> list:
    if isinstance(value, str):
        text = value.strip()
        value = _inline(text) if text.startswith("[") else \
            [v.strip() for v in text.split(",") if v.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list, got {value!r}")
    return [item(v) for v in value]


def parse_table(value: Any) -> dict:
    if isinstance(value, str):
        value = _inline(value.strip())
    if not isinstance(value, dict):
        raise ValueError(f"expected a table such as {{jump = {{rejection_threshold = 5.0}}}}, "
                         f"got {value!r}")
    return dict(value)


def parse_choice(choices: tuple[str, ...], *, upper: bool = False):
    def parse(value: Any) -> str:
        text = parse_str(value)
        text = text.upper() if upper else text
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}"
                             + did_you_mean(text, choices))
        return text
    return parse


def optional(parse):
    """An optional setting: an empty environment variable means "not set"."""
    def parse_optional(value: Any):
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse(value)
    return parse_optional


def did_you_mean(word: str, known) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"address {address!r} is not HOST:PORT")
    return host or "0.0.0.0", int(port)
