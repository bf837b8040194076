"""jwst associations built from arrival headers and product events.

Level 2 (one science exposure and its companions) lives here now; level 3
(issue 4) will sit beside it as ``level3`` and reuse ``records``,
``matching`` and ``filenames``.
"""

from calstream.steps.associations.filenames import (
    acid_for,
    association_filename,
    version_stamp,
)
from calstream.steps.associations.level2 import (
    DEGRADED_STATUS_OK,
    AssociationError,
    MissingCompanions,
    build_level2,
    missing_companions,
)
from calstream.steps.associations.matching import Companions, companion_kind, gather_companions
from calstream.steps.associations.records import Exposure, Level3Product
from calstream.steps.associations.validation import AssociationInvalid, validate_level2

__all__ = [
    "DEGRADED_STATUS_OK",
    "AssociationError",
    "AssociationInvalid",
    "Companions",
    "Exposure",
    "Level3Product",
    "MissingCompanions",
    "acid_for",
    "association_filename",
    "build_level2",
    "companion_kind",
    "gather_companions",
    "missing_companions",
    "validate_level2",
    "version_stamp",
]
