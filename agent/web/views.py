"""View models: what each page shows, built from the household service in one language."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from agent.web.charts import BarChart, Chart, bar_chart, day_chart
from agent.web.held import HeldValues
from agent.web.household import HouseholdService, PendingRequest, ReleaseEntry
from agent.web.i18n import Translator
from agent.web.pending import AgreementRequest
from policy.catalogue import Catalogue, Purpose, Recipient, Retention, Text
from policy.release import Record, Value
from policy.rights import LogEntry
from policy.tiers import ORDER, rank

TZ = ZoneInfo("Asia/Tokyo")
OFF = "off"


@dataclass(frozen=True, kw_only=True)
class ValueRow:
    """One value a release held, as the household reads it: 太陽光の発電量, 平均 2,400, W."""

    item: str
    value: str
    unit: str


@dataclass(frozen=True, kw_only=True)
class ReleaseRow:
    time: str
    window: str
    tier: str
    points: int
    size: str
    possibly_sent: bool = False  # published, removed before its acknowledgement
    items: tuple[str, ...] = ()  # what was in it, in the page's language (no values)
    values: tuple[ValueRow, ...] | None = None  # its values, when the device still holds them


@dataclass(frozen=True, kw_only=True)
class WithdrawnRow:
    time: str
    purpose: str
    recipient: str
    window: str
    tier: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class RecipientCard:
    id: str
    name: str
    kind: str | None  # the kind of recipient, None where the name already says it
    tier: str
    tier_label: str
    tier_note: str
    state: str  # in words: "sending (every 30 minutes)" or "not sending"
    expires: str | None
    options: tuple[tuple[str, str, str], ...]  # value, label, note (off excluded)
    on_tier: str  # the tier the switch turns on: the purpose's default, else the coarsest
    hours: tuple[int, ...]  # offered durations for a time-boxed purpose, empty otherwise
    releases: tuple[ReleaseRow, ...]


@dataclass(frozen=True, kw_only=True)
class AgreementCard:
    """A purpose × recipient a catalogue update changed, as the page asks about it."""

    purpose: str
    recipient: str
    heading: str
    changes: tuple[str, ...]  # one plain sentence per kind of change
    status: str  # what is sent now
    offered: str  # the tier agreeing sets
    accept: str  # the agree button's label
    required: bool  # contract-required: acknowledge only, no decline


@dataclass(frozen=True, kw_only=True)
class PurposeCard:
    id: str
    title: str
    description: str
    seed_section: str
    categories: tuple[tuple[str, bool], ...]  # title, collected by the gateway
    summary: str  # one plain sentence; the policy's own wording is behind "details"
    legal_kind: str
    legal_note: str
    articles: str  # in the page's language (Japanese article numbers on the ja page)
    seed_reference: str | None
    retention: str
    required: bool
    uses_data: bool
    needs_agreement: bool
    recipients: tuple[RecipientCard, ...]  # those that receive: a key is configured for them
    not_receiving: str  # names of the catalogue's other recipients, joined; "" if none


def text(value: Text, lang: str) -> str:
    """The Japanese or English form of a catalogue text."""
    return value.en if lang == "en" else value.ja


def local_time(moment: datetime) -> str:
    """A moment in Japan time, as the household reads it."""
    return moment.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


def size_text(n: int, t: Translator) -> str:
    return t("size.bytes", n=n) if n < 10_000 else t("size.kib", n=round(n / 1024))


def tier_options(purpose: Purpose, t: Translator) -> tuple[tuple[str, str, str], ...]:
    """The levels of detail a household may choose for a purpose, coarsest first (turning it
    off is the switch's job, not a level)."""
    if purpose.finest is None:
        return ()
    floor = -1 if purpose.required_tier is None else rank(purpose.required_tier)
    values = [tier.value for tier in ORDER if floor <= rank(tier) <= rank(purpose.finest)]
    return tuple((v, t(f"tier.{v}"), t(f"tiernote.{v}")) for v in values)


def on_tier(purpose: Purpose) -> str:
    """The level the on switch sets: the purpose's default when it has one, else the coarsest
    level that holds measurements (a month), else the coarsest allowed."""
    if purpose.finest is None:
        return OFF
    floor = -1 if purpose.required_tier is None else rank(purpose.required_tier)
    allowed = [tier.value for tier in ORDER if floor <= rank(tier) <= rank(purpose.finest)]
    default = purpose.default
    if default is not None and default.value in allowed:
        return default.value
    measured = [v for v in allowed if v != "events"]
    return (measured or allowed)[0]


def state_text(tier: str, t: Translator) -> str:
    """Whether it is sent, in words: 「送っています（30分ごと）」 or 「送っていません」."""
    return t("switch.off_state") if tier == OFF else t("switch.on_state",
                                                         tier=t(f"tier.{tier}"))


_ARTICLE = re.compile(r"^APPI Art\. (\d+)(?:\((\d+)\))?(?:\(([ivx]+)\))?$")
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9,
          "x": 10}


def article_text(article: str, lang: str) -> str:
    """A catalogue's article reference in the page's language: ``APPI Art. 27(5)(i)`` is
    個人情報保護法第27条第5項第1号 on the Japanese page; one it cannot read stays as it is."""
    found = _ARTICLE.match(article)
    if lang != "ja" or found is None:
        return article
    number, paragraph, item = found.groups()
    out = f"個人情報保護法第{number}条"
    if paragraph:
        out += f"第{paragraph}項"
    if item and item in _ROMAN:
        out += f"第{_ROMAN[item]}号"
    return out


def recipient_name(service: HouseholdService, recipient: Recipient, lang: str) -> str:
    """The catalogue's name, plus the real company named at provisioning, if any."""
    generic = text(recipient.name, lang)
    real = service.recipient_names.get(recipient.id)
    return f"{generic}: {real}" if real else generic


def point_label(point: str, t: Translator) -> str:
    """A point's name in words (``pv.power`` is 太陽光の発電量); MPPT inputs with their
    number; a name the table does not know is shown as it is."""
    key = f"point.{point}"
    if t.has(key):
        return t(key)
    parts = point.split(".")
    if len(parts) == 4 and parts[:2] == ["pv", "mppt"] and parts[2].isdigit():
        key = f"point.pv.mppt.{parts[3]}"
        if t.has(key):
            return t(key, n=parts[2])
    return point


def item_labels(points: Sequence[str], t: Translator) -> tuple[str, ...]:
    """The items of a release in words, each once, in the release's order."""
    return tuple(dict.fromkeys(point_label(p, t) for p in points))


def release_rows(entries: Sequence[ReleaseEntry], t: Translator,
                 held: HeldValues | None = None) -> tuple[ReleaseRow, ...]:
    """Releases as the page lists them; with ``held``, each with its values when the device
    still holds them (recent releases since the last start)."""
    def values(e: ReleaseEntry) -> tuple[ValueRow, ...] | None:
        records = None if held is None else held.get(e.seq)
        return None if records is None else value_rows(records, t)

    return tuple(ReleaseRow(time=local_time(e.time),
                            window=f"{local_time(e.window_start)} – {local_time(e.window_end)}",
                            tier=t(f"tier.{e.tier}"), points=e.points, size=size_text(e.size, t),
                            possibly_sent=e.possibly_sent, items=item_labels(e.items, t),
                            values=values(e))
                 for e in entries)


_STATS = ("mean", "max", "last", "delta", "changes", "union")
_UNITS = {"Cel": "℃", "": ""}


def value_rows(records: Sequence[Record], t: Translator) -> tuple[ValueRow, ...]:
    """Each value of each record, in words: the point's name, which statistic and its value,
    and the unit (a count of changes or a list of events has none); a gap says so."""
    rows = []
    for r in records:
        item = point_label(r.point, t)
        unit = _UNITS.get(r.unit, r.unit)
        if r.samples:
            shown = "、" if t.lang == "ja" else ", "
            rows.append(ValueRow(item=item, value=shown.join(
                f"{ts.astimezone(TZ):%H:%M:%S} {_value(v)}" for ts, v in r.samples),
                unit=unit))
            continue
        if not r.values:
            rows.append(ValueRow(item=item, value=t("values.gap"), unit=""))
            continue
        for stat in sorted(r.values, key=lambda k: _STATS.index(k) if k in _STATS else 99):
            key = f"values.{stat}"
            label = t(key) if t.has(key) else stat
            rows.append(ValueRow(item=item, value=f"{label} {_value(r.values[stat])}",
                                 unit="" if stat in ("changes", "union") else unit))
    return tuple(rows)


def _value(value: Value) -> str:
    """A released value as written: numbers with thousands separators and at most three
    decimals, lists joined, nothing as a dash."""
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(value) if value else "–"
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def queued_groups(service: HouseholdService, t: Translator,
                  entries: Sequence[LogEntry] | None = None
                  ) -> list[tuple[str, str, tuple[ReleaseRow, ...]]]:
    """What is about to leave: releases committed to the outbox and not yet acknowledged,
    per purpose × recipient (title, recipient, rows with their values when held)."""
    found: dict[tuple[str, str], list[ReleaseEntry]] = {}
    for e in service.queued_releases(entries=entries):
        found.setdefault((e.purpose, e.recipient), []).append(e)
    out = []
    for (pid, rid), queued in found.items():
        purpose = service.catalogue.purposes.get(pid)
        recipient = None if purpose is None else purpose.recipient(rid)
        out.append((pid if purpose is None else text(purpose.title, t.lang),
                    rid if recipient is None else recipient_name(service, recipient, t.lang),
                    release_rows(queued, t, service.held)))
    return out


def withdrawn_rows(service: HouseholdService, t: Translator,
                   entries: Sequence[LogEntry] | None = None
                   ) -> tuple[WithdrawnRow, ...]:
    """Releases queued and then withdrawn unsent, newest first, as the page lists them."""
    rows = []
    for e in service.withdrawn_releases(entries=entries):
        purpose = service.catalogue.purposes.get(e.purpose)
        recipient = None if purpose is None else purpose.recipient(e.recipient)
        reason = f"withdrawn.{e.reason}"
        rows.append(WithdrawnRow(
            time=local_time(e.time), purpose=e.purpose if purpose is None
            else text(purpose.title, t.lang),
            recipient=e.recipient if recipient is None
            else recipient_name(service, recipient, t.lang),
            window=f"{local_time(e.window_start)} – {local_time(e.window_end)}",
            tier=t(f"tier.{e.tier}"), reason=t(reason) if t.has(reason) else e.reason))
    return tuple(rows)


def purpose_cards(service: HouseholdService, t: Translator) -> list[PurposeCard]:
    """One card per purpose of the catalogue, in catalogue order; each lists the recipients
    that receive (a key is configured for them) and names the others apart."""
    grants = service.grants()
    reset = service.needs_agreement()
    recent = service.recent_releases()
    cards = []
    for p in service.catalogue.spec.purposes:
        recipients, others = [], []
        for r in p.recipients:
            if not service.receives(r.id):
                others.append(recipient_name(service, r, t.lang))
                continue
            grant = grants.get((p.id, r.id))
            tier = OFF if grant is None else grant.tier.value
            expires = None if grant is None or grant.expires is None else grant.expires
            name = recipient_name(service, r, t.lang)
            kind = t(f"kind.{r.kind}")
            recipients.append(RecipientCard(
                id=r.id, name=name, kind=None if kind in name else kind,
                tier=tier, tier_label=t(f"tier.{tier}"), tier_note=t(f"tiernote.{tier}"),
                state=state_text(tier, t),
                expires=None if expires is None else local_time(expires),
                options=tier_options(p, t), on_tier=on_tier(p),
                hours=_hours(p.time_boxed_hours),
                releases=release_rows(recent.get((p.id, r.id), ()), t)))
        sep = "、" if t.lang == "ja" else ", "
        cards.append(_card(service, p, t, tuple(recipients), p.id in reset,
                           sep.join(others) if p.finest is not None else ""))
    return cards


def release_groups(service: HouseholdService, t: Translator,
                   entries: Sequence[LogEntry] | None = None
                   ) -> list[tuple[str, str, tuple[ReleaseRow, ...]]]:
    """What left, per purpose × recipient in catalogue order (every recipient of the
    catalogue, whether it receives now or not): title, recipient, recent releases, each with
    its values when the device still holds them."""
    recent = service.recent_releases(entries=entries)
    out = []
    for p in service.catalogue.spec.purposes:
        for r in p.recipients:
            rows = release_rows(recent.get((p.id, r.id), ()), t, service.held)
            out.append((text(p.title, t.lang), recipient_name(service, r, t.lang), rows))
    return out


def _hours(default: int | None) -> tuple[int, ...]:
    if default is None:
        return ()
    return tuple(sorted({1, 24, default}))


def _card(service: HouseholdService, p: Purpose, t: Translator,
          recipients: tuple[RecipientCard, ...], needs_agreement: bool,
          not_receiving: str) -> PurposeCard:
    cats = service.catalogue.categories
    lang = t.lang
    summary = f"summary.{p.id}"
    return PurposeCard(
        id=p.id, title=text(p.title, lang), description=text(p.description, lang),
        seed_section=p.seed_section,
        categories=tuple((text(cats[c].title, lang), cats[c].collected_by_gateway)
                         for c in p.categories),
        summary=t(summary) if t.has(summary) else text(p.legal_basis.note, lang),
        legal_kind=t(f"legal.{p.legal_basis.kind}"), legal_note=text(p.legal_basis.note, lang),
        articles=("、" if lang == "ja" else ", ").join(
            article_text(a, lang) for a in p.legal_basis.articles),
        seed_reference=p.legal_basis.seed_reference_ja if lang == "ja" else None,
        retention=retention_text(p.retention, t, contact=text(service.catalogue.spec.contact,
                                                              lang)),
        required=p.required,
        uses_data=p.finest is not None, needs_agreement=needs_agreement,
        recipients=recipients, not_receiving=not_receiving)


def pending_texts(service: HouseholdService, t: Translator) -> list[tuple[PendingRequest, str]]:
    """Each pending support-centre request with the sentence that explains it."""
    out = []
    for req in service.pending_requests():
        purpose = service.catalogue.purposes.get(req.purpose)
        recipient = None if purpose is None else purpose.recipient(req.recipient)
        if purpose is None or recipient is None or not t.has(f"tier.{req.tier}"):
            continue  # a request the catalogue cannot explain is not shown, never granted
        out.append((req, t("pending.text", recipient=text(recipient.name, t.lang),
                           purpose=text(purpose.title, t.lang), tier=t(f"tier.{req.tier}"),
                           hours=req.hours, reference=req.reference)))
    return out


def retention_text(retention: Retention, t: Translator, *, contact: str) -> str:
    """The retention as a document states it, with its source; where no document sets a
    period, that the policy sets none and whom to ask. Never a period without a source."""
    none = t("purpose.retention_none", contact=contact)
    if retention.text is None or retention.source is None:
        return none
    stated = t("purpose.retention_source", text=text(retention.text, t.lang),
               source=text(retention.source, t.lang))
    return stated if retention.days is not None else f"{stated} {none}"


def agreement_cards(service: HouseholdService, t: Translator) -> list[AgreementCard]:
    """Each re-agreement a catalogue update asks for, with what changed in plain words."""
    catalogue = service.catalogue
    contact = text(catalogue.spec.contact, t.lang)
    cards = []
    for req in service.agreements():
        p = catalogue.purposes[req.purpose]
        r = p.recipient(req.recipient)
        if r is None:
            continue
        offered = t(f"tier.{req.offered}")
        if req.required:
            status = t("agree.kept", tier=t(f"tier.{req.current or 'off'}"), contact=contact)
        elif req.current is not None:
            status = t("agree.on", tier=t(f"tier.{req.current}"))
        else:
            status = t("agree.off")
        cards.append(AgreementCard(
            purpose=p.id, recipient=r.id,
            heading=t("agree.what", purpose=text(p.title, t.lang),
                      recipient=recipient_name(service, r, t.lang)),
            changes=change_sentences(catalogue, p, req, t), status=status,
            offered=req.offered, accept=t("agree.accept", tier=offered)
            if not req.required else t("agree.acknowledge"), required=req.required))
    return cards


def change_sentences(catalogue: Catalogue, p: Purpose, req: AgreementRequest,
                     t: Translator) -> tuple[str, ...]:
    """One sentence per kind of change the ledger recorded (docs/policy.md)."""
    lang = t.lang
    sep = "、" if lang == "ja" else ", "
    out = []
    for kind, value in req.changes.items():
        key = f"agree.change.{kind}"
        if not t.has(key):
            continue  # a kind this page does not know yet: the generic notice still shows
        if kind == "categories":
            names = [text(catalogue.categories[c].title, lang) for c in value
                     if c in catalogue.categories]
            out.append(t(key, items=sep.join(names)))
        elif kind == "recipients":
            names = [text(r.name, lang) for rid in value if (r := p.recipient(rid)) is not None]
            out.append(t(key, items=sep.join(names)))
        elif kind == "power_stats":
            out.append(t(key, items=sep.join(t(f"stat.{s}") for s in value)))
        elif kind in ("finest_tier", "default_tier", "reset"):
            out.append(t(key, old=t(f"tier.{value[0]}"), new=t(f"tier.{value[1]}")))
        elif kind == "retention":
            old, new = (t("agree.no_period") if d is None else t("agree.days", n=d)
                        for d in value)
            out.append(t(key, old=old, new=new))
        else:
            out.append(t(key))
    return tuple(out) or (t("agree.change.other"),)


@dataclass(frozen=True, kw_only=True)
class EnergyView:
    """わが家のエネルギー: what the device computed for the household, and beside it, what
    is sent now."""

    has_data: bool
    now_at: str | None
    now: tuple[tuple[str, str], ...]  # label, value in words
    today: tuple[tuple[str, str], ...]  # label, kWh
    power: Chart
    soc: Chart | None  # None without a battery level
    hourly: tuple[tuple[str, str, str, str], ...]  # hour, solar kW, use kW, battery %
    sending: tuple[str, ...]  # "use → recipient (level)" for each grant in force


def energy_view(service: HouseholdService, t: Translator) -> EnergyView:
    """The household's own energy, now and today, as the page shows it."""
    moment = service.now()
    now = service.energy.now(moment)
    today = service.energy.today(moment)
    kw = t("energy.kw")
    figures = []
    if now.pv is not None:
        figures.append((t("energy.pv_now"), _kw(now.pv, kw)))
    if now.load is not None:
        figures.append((t("energy.load_now"), _kw(now.load, kw)))
    if now.battery is not None:
        key = "energy.discharging" if now.battery > 0 else (
            "energy.charging" if now.battery < 0 else "energy.idle")
        figures.append((t("energy.battery_now"), t(key, kw=_kw(abs(now.battery), kw))))
    if now.soc is not None:
        figures.append((t("energy.soc_now"), f"{now.soc:.0f}%"))
    if now.grid is not None:
        key = "energy.buying" if now.grid >= 0 else "energy.selling"
        figures.append((t("energy.grid_now"), t(key, kw=_kw(abs(now.grid), kw))))
    kwh = t("energy.kwh")
    totals = (
        (t("energy.pv_today"), f"{today.kwh(today.pv):.1f} {kwh}"),
        (t("energy.load_today"), f"{today.kwh(today.load):.1f} {kwh}"),
        (t("energy.charged_today"), f"{today.kwh(today.battery, sign=-1):.1f} {kwh}"),
        (t("energy.discharged_today"), f"{today.kwh(today.battery):.1f} {kwh}"))
    has_data = any(v is not None for v in (*today.pv, *today.load, *today.soc))
    pv_kw = [None if v is None else v / 1000 for v in today.pv]
    load_kw = [None if v is None else v / 1000 for v in today.load]
    peak = max(((v, i) for i, v in enumerate(pv_kw) if v is not None), default=None)
    desc = t("energy.power_desc_empty") if peak is None else t(
        "energy.power_desc", pv=f"{today.kwh(today.pv):.1f}",
        load=f"{today.kwh(today.load):.1f}", peak=f"{peak[0]:.1f}",
        at=f"{peak[1] * 5 // 60}:{peak[1] * 5 % 60:02d}")
    power = day_chart(id="chart-power", title=t("energy.power_title"), desc=desc,
                      series=((t("energy.pv"), "pv", pv_kw), (t("energy.load"), "load",
                                                              load_kw)), unit="")
    soc = None
    if any(v is not None for v in today.soc):
        last = next(v for v in reversed(today.soc) if v is not None)
        soc = day_chart(id="chart-soc", title=t("energy.soc_title"),
                        desc=t("energy.soc_desc", last=f"{last:.0f}"),
                        series=((t("energy.soc"), "soc", today.soc),), top_value=100.0)
    hourly: list[tuple[str, str, str, str]] = []
    for hour in range(24):
        part = slice(hour * 12, hour * 12 + 12)
        pv_h, load_h = _hour_mean(pv_kw[part]), _hour_mean(load_kw[part])
        soc_h = _hour_mean(today.soc[part])
        if pv_h is not None or load_h is not None or soc_h is not None:
            hourly.append((f"{hour}:00", "–" if pv_h is None else f"{pv_h:.1f}",
                           "–" if load_h is None else f"{load_h:.1f}",
                           "–" if soc_h is None else f"{soc_h:.0f}%"))
    sending = tuple(t("energy.sending_row", purpose=card.title, recipient=r.name,
                      tier=r.tier_label)
                    for card in purpose_cards(service, t) for r in card.recipients
                    if r.tier != OFF)
    return EnergyView(has_data=has_data, now_at=None if now.at is None else local_time(now.at),
                      now=tuple(figures), today=totals, power=power, soc=soc,
                      hourly=tuple(hourly), sending=sending)


def _kw(watts: float, unit: str) -> str:
    return f"{watts / 1000:.1f} {unit}"


def _hour_mean(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


@dataclass(frozen=True, kw_only=True)
class FlowView:
    """What left the home and what stayed, per day of the last week: items that left per
    purpose (the release log: sent and possibly sent) and readings taken on the device."""

    left: BarChart
    stayed: BarChart
    purposes: tuple[str, ...]  # titles of the purposes with a column in the table
    rows: tuple[tuple[str, tuple[int, ...], int, int], ...]  # day, per purpose, left, readings


FLOW_DAYS = 7


def flow_view(service: HouseholdService, t: Translator,
              entries: Sequence[LogEntry] | None = None) -> FlowView:
    """Per day (Japan time) of the last seven, the items (records) of releases that left the
    home or may have, per purpose, and the readings the device took (since its last start)."""
    today = service.now().astimezone(TZ).date()
    days = [today - timedelta(days=k) for k in range(FLOW_DAYS - 1, -1, -1)]
    left: dict[tuple[str, date], int] = {}
    for e in service.all_releases(entries):
        day = e.time.astimezone(TZ).date()
        if days[0] <= day <= today:
            left[(e.purpose, day)] = left.get((e.purpose, day), 0) + e.records
    shown = [p for p in service.catalogue.spec.purposes
             if any((p.id, d) in left for d in days)]
    per_purpose = [(text(p.title, t.lang), f"b{i % 6}",
                    [left.get((p.id, d), 0) for d in days]) for i, p in enumerate(shown)]
    readings = [service.readings.on(d) for d in days]
    columns = [str(d.day) for d in days]
    span = t("flow.span", first=_day(days[0], t), last=_day(today, t))
    total_left = sum(left.get((p.id, d), 0) for p in shown for d in days)
    left_chart = bar_chart(
        id="chart-left", title=t("flow.left_title"),
        desc=t("flow.left_desc", span=span, n=f"{total_left:,}"),
        columns=columns, stacks=per_purpose)
    stayed_chart = bar_chart(
        id="chart-stayed", title=t("flow.stayed_title"),
        desc=t("flow.stayed_desc", span=span, n=f"{sum(readings):,}"),
        columns=columns, stacks=[(t("flow.readings"), "stay", readings)])
    rows = tuple((_day(d, t), tuple(counts[i] for _, _, counts in per_purpose),
                  sum(counts[i] for _, _, counts in per_purpose), readings[i])
                 for i, d in enumerate(days))
    return FlowView(left=left_chart, stayed=stayed_chart,
                    purposes=tuple(title for title, _, _ in per_purpose), rows=rows)


def _day(day: date, t: Translator) -> str:
    return f"{day.month}月{day.day}日" if t.lang == "ja" else f"{day.day} {day:%b}"
