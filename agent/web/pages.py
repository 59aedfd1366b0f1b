"""The household page's GET handlers: the four pages, the downloads and the login form."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from agent.web import views
from agent.web.context import PageContext, csv_download, json_download, redirect
from agent.web.i18n import translator


async def purposes(page: PageContext, request: Request) -> Response:
    """Uses and consent: one card per purpose, pending requests, catalogue notice."""
    session = page.authed(request)
    if session is None:
        return page.login_redirect(request)
    t = translator(page.lang(request))
    service = page.service
    cards = views.purpose_cards(service, t)
    reset = [c.title for c in cards if c.needs_agreement]
    targets = {f"r-{c.id}-{r.id}" for c in cards for r in c.recipients}
    return page.render(request, "purposes.html", session, flash_targets=targets, cards=cards,
                       pending=views.pending_texts(service, t), reset=reset,
                       agreements=views.agreement_cards(service, t),
                       version=service.catalogue.version)


async def released(page: PageContext, request: Request) -> Response:
    """What left my home: recent releases per purpose and recipient, the queue, the drops,
    and apart, what was queued and then withdrawn unsent."""
    session = page.authed(request)
    if session is None:
        return page.login_redirect(request)
    t = translator(page.lang(request))
    service = page.service
    stats = service.outbox_stats()
    titles = {p.id: views.text(p.title, t.lang) for p in service.catalogue.spec.purposes}
    entries = service.release_entries()  # the release log, read once for the whole page
    groups = views.release_groups(service, t, entries)
    drops = [(titles.get(pid, pid), n) for pid, n in sorted(stats.drops.items()) if n]
    return page.render(request, "released.html", session, groups=groups,
                       any_released=any(rows for _, _, rows in groups), depth=stats.depth,
                       queued_size=views.size_text(stats.bytes, t), drops=drops,
                       withdrawn=views.withdrawn_rows(service, t, entries),
                       queued=views.queued_groups(service, t, entries),
                       held_limit=service.held.limit, show_values=True,
                       flow=views.flow_view(service, t, entries))


async def energy(page: PageContext, request: Request) -> Response:
    """わが家のエネルギー: solar, battery and use now and today, computed on the device and
    never sent; beside it, what is sent now."""
    session = page.authed(request)
    if session is None:
        return page.login_redirect(request)
    return page.render(request, "energy.html", session,
                       view=views.energy_view(page.service, translator(page.lang(request))))


async def history(page: PageContext, request: Request) -> Response:
    """Consent history, newest first, with the catalogue version."""
    session = page.authed(request)
    if session is None:
        return page.login_redirect(request)
    lang = page.lang(request)
    catalogue = page.service.catalogue
    rows = []
    for rec in page.service.history():
        purpose = catalogue.purposes.get(rec.purpose)
        recipient = None if purpose is None else purpose.recipient(rec.recipient)
        rows.append((rec, views.local_time(rec.timestamp),
                     rec.purpose if purpose is None else views.text(purpose.title, lang),
                     rec.recipient if recipient is None else views.text(recipient.name, lang)))
    return page.render(request, "history.html", session, rows=rows, version=catalogue.version)


async def rights(page: PageContext, request: Request) -> Response:
    """Download everything, stop third-party provision, delete local data."""
    session = page.authed(request)
    if session is None:
        return page.login_redirect(request)
    return page.render(request, "rights.html", session, flash_targets={"stop", "delete-card"})


async def export(page: PageContext, request: Request) -> Response:
    """Everything the device holds about the household, as a JSON download."""
    if page.authed(request) is None:
        return page.login_redirect(request)
    stamp = page.service.now().strftime("%Y%m%d")
    return json_download(page.service.export_all(), f"hems-export-{stamp}.json")


CSV_COLUMNS = ("time", "purpose", "recipient", "tier", "window_start", "window_end", "items",
               "points", "bytes", "status")


async def released_csv(page: PageContext, request: Request) -> Response:
    """Every release that left the home (or may have), one row each, newest first: when,
    which use, who received it, the level, the period, its items in words (never values),
    their count, its size and whether it was sent or may have been; in the page's language."""
    if page.authed(request) is None:
        return page.login_redirect(request)
    t = translator(page.lang(request))
    service = page.service
    sep = "、" if t.lang == "ja" else "; "
    rows = []
    for e in service.all_releases():
        purpose = service.catalogue.purposes.get(e.purpose)
        recipient = None if purpose is None else purpose.recipient(e.recipient)
        rows.append((
            views.local_time(e.time),
            e.purpose if purpose is None else views.text(purpose.title, t.lang),
            e.recipient if recipient is None else views.recipient_name(service, recipient,
                                                                       t.lang),
            t(f"tier.{e.tier}") if t.has(f"tier.{e.tier}") else e.tier,
            views.local_time(e.window_start), views.local_time(e.window_end),
            sep.join(views.item_labels(e.items, t)), e.points, e.size,
            t("released.possibly_sent") if e.possibly_sent else t("csv.sent")))
    stamp = service.now().strftime("%Y%m%d")
    return csv_download([t(f"csv.{c}") for c in CSV_COLUMNS], rows,
                        f"hems-released-{stamp}.csv")


async def provision_records(page: PageContext, request: Request) -> Response:
    """Records of provision to third parties (APPI Art. 33(5)), as a JSON download; apart,
    those queued and then withdrawn unsent (never provided)."""
    if page.authed(request) is None:
        return page.login_redirect(request)
    stamp = page.service.now().strftime("%Y%m%d")
    service = page.service
    return json_download({"records": [e.as_dict() for e in service.provision_records()],
                          "withdrawn_never_sent": [e.as_dict()
                                                   for e in service.withdrawn_provisions()]},
                         f"hems-provision-records-{stamp}.json")


async def login_form(page: PageContext, request: Request) -> Response:
    """The login form, with a signed token in a cookie and in the form (nothing stored)."""
    if page.authed(request) is not None:
        return redirect("/")
    return login_page(page, request)


def login_page(page: PageContext, request: Request, status: int = 200,
               error: str = "") -> Response:
    """The login form with a fresh token: its cookie and its hidden field carry the same
    value (see :class:`agent.web.security.LoginTokens`)."""
    token = page.login_tokens.issue()
    response = page.render(request, "login.html", None, status, error=error, login_token=token)
    page.set_cookie(response, page.login_cookie, token,
                    int(page.login_tokens.lifetime.total_seconds()))
    return response

