"""jwst associations built from arrival headers and product events.

Level 2 (one science exposure and its companions) is ``level2``; level 3
(the candidates stage 3 combines) is ``level3``; both reuse ``records`` and
``filenames``.
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
from calstream.steps.associations.level3 import (
    Level3Error,
    Level3Key,
    build_level3,
    candidate_key,
    product_name,
    validate_level3,
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
    "Level3Error",
    "Level3Key",
    "Level3Product",
    "MissingCompanions",
    "acid_for",
    "association_filename",
    "build_level2",
    "build_level3",
    "candidate_key",
    "companion_kind",
    "gather_companions",
    "missing_companions",
    "product_name",
    "validate_level2",
    "validate_level3",
    "version_stamp",
]
