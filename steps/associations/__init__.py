"""jwst associations built from arrival headers and product events.

Level 2 (one science exposure and its companions) is ``level2``, its
companions ``matching``; level 3 (the candidates stage 3 combines) is
``level3_candidates`` (keys, names) and ``level3`` (the association); both
levels reuse ``records`` and ``filenames`` and are checked by ``validation``.
"""

from calstream.steps.associations.filenames import (
    NamingError,
    acid_for,
    association_filename,
    version_stamp,
)
from calstream.steps.associations.level2 import (
    DEGRADED_STATUS_OK,
    AssociationError,
    MissingCompanions,
    build_level2,
)
from calstream.steps.associations.level3 import build_level3
from calstream.steps.associations.level3_candidates import (
    Level3Error,
    Level3Key,
    candidate_key,
    product_name,
)
from calstream.steps.associations.matching import Companions, companion_kind, gather_companions
from calstream.steps.associations.records import Exposure, Level3Product
from calstream.steps.associations.validation import (
    AssociationInvalid,
    validate_level2,
    validate_level3,
)

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
    "NamingError",
    "acid_for",
    "association_filename",
    "build_level2",
    "build_level3",
    "candidate_key",
    "companion_kind",
    "gather_companions",
    "product_name",
    "validate_level2",
    "validate_level3",
    "version_stamp",
]
