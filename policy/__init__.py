"""Pure, synchronous rules: purpose catalogue, consent ledger, minimisation, rights.

No asyncio, no network, no imports from ``agent`` or ``drivers``; the only files touched are
the consent ledger and the release log. See ``docs/policy.md``.
"""

from policy.catalogue import Catalogue, load_catalogue, material_change
from policy.errors import CatalogueError, ConsentError, LedgerIntegrityError, PolicyError
from policy.ledger import Ledger
from policy.minimise import Minimiser, ReadingLike
from policy.records import ConsentChange, ConsentRecord, Event, Grant, PurgeSpec, Source
from policy.release import Record, Release
from policy.rights import Deletion, ReleaseLog, delete_household_data, export_all
from policy.tiers import Tier, must_prune, retention_cutoffs

__all__ = [
    "Catalogue", "CatalogueError", "ConsentChange", "ConsentError", "ConsentRecord", "Deletion",
    "Event", "Grant", "Ledger", "LedgerIntegrityError", "Minimiser", "PolicyError", "PurgeSpec",
    "ReadingLike", "Record", "Release", "ReleaseLog", "Source", "Tier", "delete_household_data",
    "export_all", "load_catalogue", "material_change", "must_prune", "retention_cutoffs",
]
