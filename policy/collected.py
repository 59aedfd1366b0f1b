"""What the gateway never collects, refused by the minimiser whatever the catalogue says.

The privacy policy names water, gas and external generation — and the contract, household and
contact details kept by the company, not the gateway — as categories the gateway does not
collect (``docs/purposes.md``: "not collected"). The catalogue lists them (a purpose such as
``maintenance_watch`` names them), so an allow-list alone would let such points through the day
a driver produced one. The minimiser therefore refuses, for every purpose:

* points whose name starts with ``water.``, ``gas.`` or ``external.`` (the patterns of those
  categories), even where a catalogue maps them elsewhere;
* points of the categories in :data:`NEVER_COLLECTED` or of any category the catalogue marks
  ``collected_by_gateway: false``.

They are dropped on arrival like a point no category matches, and counted
(``Minimiser.stats["not_collected"]`` as well as ``["dropped"]``).
"""

from __future__ import annotations

from policy.catalogue import Catalogue

NEVER_COLLECTED = frozenset({"water", "gas", "external_generation", "contract", "household",
                             "contact"})
"""Category ids the gateway never collects (the privacy policy's "not collected")."""
NEVER_COLLECTED_POINTS = ("water.", "gas.", "external.")
"""Point name prefixes of water, gas and external generation."""


def collected_category(catalogue: Catalogue, point: str) -> tuple[str | None, bool]:
    """The category ``point`` is collected under (``None``: drop it), and whether it was
    refused as never collected."""
    if point.startswith(NEVER_COLLECTED_POINTS):
        return None, True
    category = catalogue.category_of(point)
    if category is None:
        return None, False
    spec = catalogue.categories.get(category)
    if category in NEVER_COLLECTED or spec is None or not spec.collected_by_gateway:
        return None, True
    return category, False
