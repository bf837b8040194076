"""JWST exposure file names (docs/jwst/data_products/file_naming.rst).

``jw<ppppp><ooo><vvv>_<gg><s><aa>_<eeeee>[-seg<NNN>]_<detector>_<suffix>.fits``

The exposure id used as a Kafka key is the name without ``_<suffix>.fits``:
``jw01234001001_02101_00001_nrcb1``.

Guide-star (FGS guider) files are named by their guiding activity instead
of visit group, sequence, activity, exposure and detector, as jwst names them:
``jw<ppppp><ooo><vvv>_gs-<acq1|acq2|track|fg>_<yyyydddhhmmss>_<suffix>.fits``
and, for identification, ``jw<ppppp><ooo><vvv>_gs-id_<attempt>_<image|stacked>
_<suffix>.fits``. Their exposure id is the name without the suffix
(``jw01019001001_gs-acq1_2022117003102``); the parts they do not have are
empty strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from operator import itemgetter

_NAME = re.compile(
    r"^jw(?P<program>\d{5})(?P<observation>\d{3})(?P<visit>\d{3})"
    r"_(?P<visit_group>\d{2})(?P<sequence>\d)(?P<activity>[0-9a-z]{2})"
    r"_(?P<exposure>\d{5})(?:-seg(?P<segment>\d{3}))?"
    r"_(?P<detector>[a-z0-9]+)"
    r"(?:_(?P<suffix>[a-z0-9]+))?"
    r"(?P<extension>\.fits)?$",
    re.ASCII,  # \d is 0-9 only: a Unicode digit is no part of a JWST name
)
_GUIDER_NAME = re.compile(
    r"^jw(?P<program>\d{5})(?P<observation>\d{3})(?P<visit>\d{3})"
    r"_(?P<guider>gs-(?:acq1|acq2|track|fg)_\d{13}|gs-id_\d{1,3}_(?:image|stacked))"
    r"(?:_(?P<suffix>[a-z0-9]+))?"
    r"(?P<extension>\.fits)?$",
    re.ASCII,
)


class BadName(ValueError):
    """A file name that is not a JWST exposure name."""


@dataclass(frozen=True)
class ExposureName:
    program: str  # 5 digits, e.g. "01234"
    observation: str  # 3 digits
    visit: str  # 3 digits
    visit_group: str  # 2 digits
    sequence: str  # 1 digit: 1 prime, 2-5 parallel
    activity: str  # 2 base-36 characters
    exposure: str  # 5 digits
    detector: str  # lower case, e.g. "nrcb1"
    segment: str | None = None  # 3 digits, or None
    suffix: str | None = None  # e.g. "uncal", "rate"
    guider: str | None = None  # a guider file's "gs-<mode>_<time>" (or "gs-id_<n>_<kind>")
    # Program + observation + visit, the unit NEXPOSUR counts in: written once
    # (the planner files and looks up every exposure by it several times).
    visit_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "visit_id", f"jw{self.program}{self.observation}{self.visit}")

    @property
    def is_guider(self) -> bool:
        return self.guider is not None

    @property
    def exposure_id(self) -> str:
        if self.guider is not None:
            return f"jw{self.program}{self.observation}{self.visit}_{self.guider}"
        seg = f"-seg{self.segment}" if self.segment else ""
        return (
            f"jw{self.program}{self.observation}{self.visit}"
            f"_{self.visit_group}{self.sequence}{self.activity}"
            f"_{self.exposure}{seg}_{self.detector}"
        )


    def filename(self, suffix: str | None = None, extension: str = ".fits") -> str:
        suffix = suffix or self.suffix
        if not suffix:
            raise ValueError("a file name needs a suffix")
        return f"{self.exposure_id}_{suffix}{extension}"

    def with_suffix(self, suffix: str) -> ExposureName:
        return replace(self, suffix=suffix)


@lru_cache(maxsize=1 << 16)  # the planner asks for the same ids again and again
def parse_exposure_name(name: str) -> ExposureName:
    """Parse a file name (or an exposure id) into its parts.

    Raises BadName with the reason when the name does not follow the JWST
    convention.
    """
    base = name.rsplit("/", 1)[-1]
    m = _NAME.fullmatch(base)  # whole: "$" alone lets a final newline through
    if m:
        parts = m.groupdict()
        parts.pop("extension")
        return _named(parts, guider=None)
    m = _GUIDER_NAME.fullmatch(base)
    if m:
        parts = m.groupdict()
        parts.pop("extension")
        return _named(parts, visit_group="", sequence="", activity="", exposure="",
                      detector="")
    raise BadName(
        f"{base!r} is not a JWST exposure name "
        "(jw<ppppp><ooo><vvv>_<gg><s><aa>_<eeeee>[-seg<NNN>]_<detector>_<suffix>.fits, "
        "or a guider's jw<ppppp><ooo><vvv>_gs-<mode>_<yyyydddhhmmss>_<suffix>.fits)"
    )


_FIELDS = tuple(ExposureName.__dataclass_fields__)
_IN_FIELD_ORDER = itemgetter(*_FIELDS)


def _named(parts: dict[str, str | None], **more: str | None) -> ExposureName:
    """``ExposureName(**parts, **more)`` for parts that name every field:
    filled in directly (in the fields' order), as a frozen dataclass's
    ``__init__`` sets each of its eleven fields through ``object.__setattr__``
    (half the cost of parsing a name, once per exposure on the planner's way in)."""
    parts.update(more)
    if len(parts) != len(_FIELDS):  # a field the patterns do not name: the usual way
        return ExposureName(**parts)
    name = object.__new__(ExposureName)
    name.__dict__.update(zip(_FIELDS, _IN_FIELD_ORDER(parts), strict=True))
    return name
