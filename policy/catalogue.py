"""The purpose catalogue: versioned data (Japanese and English) built from the seed's 2(2)–(4).

A catalogue is a JSON file validated here; :func:`load_catalogue` with ``None`` loads the factory
catalogue shipped in ``policy/catalogue/factory.json``. Points map to data categories by glob
patterns, matched in catalogue order (first match wins, so specific equipment patterns come
before domain-wide ones). A point no category matches belongs to no purpose and is dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policy import strict_json
from policy.errors import CatalogueError
from policy.strict_json import JSONRefused
from policy.tiers import Tier, rank

TierName = Literal["events", "1mo", "1d", "30min", "1min", "raw"]
TierOrOff = Literal["off", "events", "1mo", "1d", "30min", "1min", "raw"]
RecipientKind = Literal["company", "contractor", "joint_user", "support_centre", "third_party"]
_ID = r"^[a-z][a-z0-9_]*$"
_STRICT = ConfigDict(frozen=True, extra="forbid")


class Text(BaseModel):
    """The same text in Japanese (shown first) and English."""

    model_config = _STRICT
    ja: str = Field(min_length=1)
    en: str = Field(min_length=1)


class Right(BaseModel):
    model_config = _STRICT
    id: str = Field(pattern=_ID)
    seed_section: str
    title: Text
    articles: tuple[str, ...]


class Category(BaseModel):
    """A data category of the seed; ``points`` are glob patterns over canonical point names."""

    model_config = _STRICT
    id: str = Field(pattern=_ID)
    seed_section: str
    collected_by_gateway: bool
    title: Text
    seed_wording_ja: str
    points: tuple[str, ...]


class Recipient(BaseModel):
    model_config = _STRICT
    id: str = Field(pattern=_ID)
    kind: RecipientKind
    name: Text


class LegalBasis(BaseModel):
    model_config = _STRICT
    kind: Literal["contract", "published_purpose", "consent", "third_party_consent"]
    articles: tuple[str, ...] = Field(min_length=1)
    seed_reference_ja: str | None
    note: Text


class Retention(BaseModel):
    """How long the data is kept, as a document states it.

    ``source`` names that document (e.g. the privacy policy's section); the page shows
    ``text`` only when it has a source. ``days`` and ``text`` are ``null`` where no document
    sets a period. ``source`` is optional in the file so that catalogues written before it
    existed still load with the same content hash.
    """

    model_config = _STRICT
    days: int | None = Field(ge=1)
    text: Text | None
    source: Text | None = None

    @property
    def stated(self) -> bool:
        """Whether a document states this retention (text with a source)."""
        return self.text is not None and self.source is not None


class Purpose(BaseModel):
    """One purpose of use: what, why, who receives it, how fine, and by default what."""

    model_config = _STRICT
    id: str = Field(pattern=_ID)
    seed_section: str
    priority: int = Field(ge=0, le=1000)  # outbox drop order: lowest priority dropped first
    title: Text
    description: Text
    legal_basis: LegalBasis
    default_tier: TierOrOff
    finest_tier: TierOrOff  # "off": the purpose uses no gateway data
    required: bool  # required by the contract: cannot be switched off while it runs
    required_tier: TierName | None
    categories: tuple[str, ...]
    recipients: tuple[Recipient, ...] = Field(min_length=1)
    retention: Retention
    time_boxed_hours: int | None = Field(ge=1)  # default expiry of a grant, hours
    power_stats: tuple[Literal["mean", "max"], ...] = Field(min_length=1)
    rounding: dict[TierName, dict[Literal["power", "energy", "level", "gauge"], float]]

    @property
    def default(self) -> Tier | None:
        return None if self.default_tier == "off" else Tier(self.default_tier)

    @property
    def finest(self) -> Tier | None:
        return None if self.finest_tier == "off" else Tier(self.finest_tier)

    def recipient(self, recipient_id: str) -> Recipient | None:
        return next((r for r in self.recipients if r.id == recipient_id), None)


class CatalogueSpec(BaseModel):
    model_config = _STRICT
    schema_version: Literal[1]
    version: str = Field(min_length=1)
    policy_version: str = Field(min_length=1)
    controller: Text
    contact: Text
    rights: tuple[Right, ...]
    categories: tuple[Category, ...] = Field(min_length=1)
    purposes: tuple[Purpose, ...] = Field(min_length=1)


@dataclass(frozen=True, kw_only=True)
class Catalogue:
    """A validated catalogue with its content hash (sha256 over :meth:`canonical_json`)."""

    spec: CatalogueSpec
    source: str
    content_hash: str
    purposes: dict[str, Purpose]
    categories: dict[str, Category]
    _point_cache: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def version(self) -> str:
        return self.spec.version

    def canonical_json(self) -> bytes:
        return canonical_json(self.content())

    def content(self) -> dict[str, Any]:
        """The spec as JSON-able data, as hashed and stored (fields a file left out stay out)."""
        return spec_content(self.spec)

    def category_of(self, point: str) -> str | None:
        """The category a canonical point belongs to (first matching category), or None."""
        try:
            return self._point_cache[point]
        except KeyError:
            found = next((c.id for c in self.spec.categories
                          if any(fnmatchcase(point, p) for p in c.points)), None)
            self._point_cache[point] = found
            return found

    def allows(self, purpose_id: str, point: str) -> bool:
        """Whether ``point`` is on ``purpose_id``'s allow-list."""
        category = self.category_of(point)
        return category is not None and category in self.purposes[purpose_id].categories

    def patterns(self, purpose_id: str) -> frozenset[str]:
        """The glob patterns reachable by a purpose (for comparing catalogue versions)."""
        cats = self.purposes[purpose_id].categories
        return frozenset(f"{c}:{p}" for c in cats for p in self.categories[c].points)


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys, no spaces, UTF-8) used for every hash in policy."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def spec_content(spec: CatalogueSpec) -> dict[str, Any]:
    """What the content hash covers: the validated spec without the optional fields the file
    left out, so adding an optional field later does not change older catalogues' hashes."""
    return spec.model_dump(mode="json", exclude_unset=True)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue file; ``None`` loads the shipped factory catalogue."""
    if path is None:
        ref = resources.files("policy").joinpath("catalogue/factory.json")
        source, text = "policy/catalogue/factory.json", ref.read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogueError(source, "(file)", f"cannot read: {exc.strerror}") from exc
    return parse_catalogue(text, source=source)


def parse_catalogue(text: str | bytes, *, source: str = "<catalogue>",
                    past: bool = False) -> Catalogue:
    """Validate catalogue JSON text; errors name ``source`` and the field path.

    ``past=True`` re-reads a catalogue the ledger was once bound to: it is checked as it was
    then, without the rule on what may default to on (added later), so a ledger bound to a
    catalogue that broke it still opens and the next :meth:`~policy.ledger.Ledger.apply_catalogue`
    repairs what that catalogue switched on.
    """
    try:
        raw = strict_json.loads(text)
    except JSONRefused as exc:
        raise CatalogueError(source, "(file)", f"refused ({exc.reason}): {exc}") from exc
    try:
        spec = CatalogueSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(root)"
        raise CatalogueError(source, where, first["msg"]) from exc
    _check(spec, source, defaults=not past)
    return Catalogue(spec=spec, source=source,
                     content_hash=hashlib.sha256(canonical_json(spec_content(spec))).hexdigest(),
                     purposes={p.id: p for p in spec.purposes},
                     categories={c.id: c for c in spec.categories})


def _check(spec: CatalogueSpec, source: str, *, defaults: bool = True) -> None:
    """Cross-field rules pydantic cannot express field by field."""
    def fail(where: str, problem: str) -> None:
        raise CatalogueError(source, where, problem)

    _unique([c.id for c in spec.categories], "categories", fail)
    _unique([p.id for p in spec.purposes], "purposes", fail)
    known = {c.id for c in spec.categories}
    for i, p in enumerate(spec.purposes):
        at = f"purposes.{i}"
        _unique([r.id for r in p.recipients], f"{at}.recipients", fail)
        if p.retention.days is not None and p.retention.text is None:
            fail(f"{at}.retention.text", "a retention period in days needs its text")
        for j, cat in enumerate(p.categories):
            if cat not in known:
                fail(f"{at}.categories.{j}", f"unknown category {cat!r}")
        finest = -1 if p.finest is None else rank(p.finest)
        if p.default is not None and rank(p.default) > finest:
            fail(f"{at}.default_tier", f"{p.default_tier} is finer than finest_tier "
                                       f"{p.finest_tier}")
        if p.required != (p.required_tier is not None):
            fail(f"{at}.required_tier", "set exactly when required is true")
        if p.required_tier is not None and (p.default is None
                                            or rank(p.required_tier) > rank(p.default)):
            fail(f"{at}.required_tier", "must not be finer than default_tier")
        for tier_name, steps in p.rounding.items():
            if rank(tier_name) > finest:
                fail(f"{at}.rounding.{tier_name}", "tier finer than finest_tier")
            for kind, step in steps.items():
                if not step > 0:
                    fail(f"{at}.rounding.{tier_name}.{kind}", "step must be positive")
        if defaults:
            _check_default(p, at, fail)


CONSENT_KINDS = frozenset({"consent", "third_party_consent"})
"""Legal bases under which nothing leaves the home before the household agrees."""


def _check_default(p: Purpose, at: str, fail: Any) -> None:
    """A purpose resting on consent, and any purpose with a third-party recipient, is off
    until the household switches it on: its default must be ``off``."""
    if p.default is None:
        return
    for r in p.recipients:
        if p.legal_basis.kind in CONSENT_KINDS:
            fail(f"{at}.default_tier", f"purpose {p.id!r} rests on consent (legal basis "
                 f"{p.legal_basis.kind}): its default for recipient {r.id!r} must be off, "
                 f"not {p.default_tier}")
        if r.kind == "third_party":
            fail(f"{at}.default_tier", f"recipient {r.id!r} of purpose {p.id!r} is a third "
                 f"party: the purpose's default must be off, not {p.default_tier}")


def _unique(ids: list[str], where: str, fail: Any) -> None:
    seen: set[str] = set()
    for i, ident in enumerate(ids):
        if ident in seen:
            fail(f"{where}.{i}.id", f"duplicate id {ident!r}")
        seen.add(ident)


@dataclass(frozen=True, kw_only=True)
class Widening:
    """How a new catalogue version makes one purpose more invasive than the old one.

    Every field empty/false/None means: not wider (the change is not material).
    """

    categories: tuple[str, ...] = ()  # categories added, or whose point patterns widened
    recipients: tuple[str, ...] = ()  # recipients added
    finest_tier: tuple[str, str] | None = None  # (old, new) when the new one is finer
    default_tier: tuple[str, str] | None = None  # (old, new) when the new one is finer
    power_stats: tuple[str, ...] = ()  # statistics added (e.g. max)
    rounding: bool = False  # a rounding step became finer or went away
    retention: tuple[int | None, int | None] | None = None  # (old, new) days when longer
    required: bool = False  # became contract-required

    def __bool__(self) -> bool:
        return bool(self.categories or self.recipients or self.finest_tier or self.default_tier
                    or self.power_stats or self.rounding or self.retention or self.required)

    def as_dict(self) -> dict[str, Any]:
        """The non-empty fields, JSON-able (stored in the ledger record that acts on it)."""
        out: dict[str, Any] = {}
        for name in ("categories", "recipients", "finest_tier", "default_tier", "power_stats",
                     "rounding", "retention", "required"):
            value = getattr(self, name)
            if value:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def widening(old: Catalogue, new: Catalogue, purpose_id: str) -> Widening:
    """How ``purpose_id`` (present in both) is more invasive in ``new`` than in ``old``."""
    o, n = old.purposes[purpose_id], new.purposes[purpose_id]
    old_patterns = old.patterns(purpose_id)
    cats = tuple(c for c in n.categories
                 if c not in o.categories
                 or not {f"{c}:{p}" for p in new.categories[c].points} <= old_patterns)
    old_days, new_days = o.retention.days, n.retention.days
    return Widening(
        categories=cats,
        recipients=tuple(r.id for r in n.recipients if o.recipient(r.id) is None),
        finest_tier=((o.finest_tier, n.finest_tier)
                     if _finer(n.finest_tier, o.finest_tier) else None),
        default_tier=((o.default_tier, n.default_tier)
                      if _finer(n.default_tier, o.default_tier) else None),
        power_stats=tuple(s for s in n.power_stats if s not in o.power_stats),
        rounding=_finer_rounding(o, n),
        retention=((old_days, new_days) if old_days is not None
                   and (new_days is None or new_days > old_days) else None),
        required=n.required and not o.required)


def material_change(old: Catalogue, new: Catalogue) -> set[str]:
    """Purposes present in both whose new version is more invasive than the old one.

    More invasive (:class:`Widening`): more data (a category or point pattern not reachable
    before), a finer finest or default tier, a recipient not listed before, a finer rounding
    step or a missing one, a statistic added (e.g. max), a longer retention period (or none
    where there was one), or becoming contract-required.
    """
    return {pid for pid in new.purposes
            if pid in old.purposes and widening(old, new, pid)}


def _finer(a: str, b: str) -> bool:
    return (-1 if a == "off" else rank(a)) > (-1 if b == "off" else rank(b))


def _finer_rounding(old: Purpose, new: Purpose) -> bool:
    reach = -1 if new.finest is None else rank(new.finest)
    for tier_name, steps in old.rounding.items():
        if rank(tier_name) > reach:
            continue  # the new version no longer releases this tier at all
        new_steps = new.rounding.get(tier_name, {})
        if any(kind not in new_steps or new_steps[kind] < step for kind, step in steps.items()):
            return True
    return False
