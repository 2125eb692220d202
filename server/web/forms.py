"""The form posts: the service form (shown and posted) and the no-JS actions on a request
(send a code, ask for another, cancel), each redirecting back to the progress page.

Every post carries the session's CSRF token; the work is the
:class:`~server.requests.service.RequestService`'s, called with the session's
:class:`~server.requests.caller.Caller`; its errors become the form's messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from server.domain.catalog import Service, get_service
from server.domain.display import about
from server.domain.errors import Conflict, RateLimited, ValidationFailed
from server.domain.i18n import ui
from server.requests.caller import check_hash
from server.web import access, csrf
from server.web.rendering import error_key, expected_seconds, page_lang, progress_url, render, see_other, set_flash
from server.web.typedefs import SERVICE

routes = web.RouteTableDef()


def form_fields(
    service: Service, lang: str, values: Mapping[str, str], errors: Mapping[str, str]
) -> list[dict[str, Any]]:
    fields = []
    for f in service.fields:
        numeric = f.digits or f.type == "number"
        fields.append(
            {
                "name": f.name,
                "label": f.label(lang),
                "type": f.type,
                "input_type": "tel" if f.type == "tel" else "text",
                "required": f.required,
                "value": values.get(f.name, ""),
                "error": errors.get(f.name, ""),
                "example": ui("example", lang, example=f.example(lang)) if f.placeholder else "",
                "placeholder": f.example(lang),
                "inputmode": "numeric" if numeric else ("tel" if f.type == "tel" else None),
                "autocomplete": f.autocomplete,
                "maxlength": f.max_length,
                "ltr": numeric or f.type == "tel" or f.pattern is not None,
                "choices": [(v, t(lang)) for v, t in f.choices],
            }
        )
    return fields


async def render_form(
    request: web.Request,
    service: Service,
    lang: str,
    token: str,
    *,
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    banner: str = "",
    status: int = 200,
) -> web.Response:
    context = {
        "service": {"slug": service.slug, "title": service.title(lang), "summary": service.summary(lang)},
        "about": about(round((await expected_seconds(request, [service]))[service.slug]), lang),
        "needs_code": service.may_ask_otp,
        "fields": form_fields(service, lang, values or {}, errors or {}),
        "csrf_field": csrf.FIELD,
        "csrf": token,
        "banner": banner or (ui("form_errors", lang) if errors else ""),
    }
    return render(request, "form.html", context, status=status, lang=lang)


@routes.get("/services/{slug}")
async def service_form(request: web.Request) -> web.Response:
    service = get_service(request.match_info["slug"])
    lang = page_lang(request)
    return await render_form(request, service, lang, await csrf.token(request))


@routes.post("/services/{slug}")
async def start_request(request: web.Request) -> web.StreamResponse:
    """The form's post: validated and created by the API's own code, then 303 to the progress page."""
    service = get_service(request.match_info["slug"])
    form = await request.post()
    await csrf.verify(request, form)
    lang = page_lang(request)
    values = {f.name: v for f in service.fields if isinstance(v := form.get(f.name), str)}
    token = await csrf.token(request)
    requests = request.app[SERVICE]
    try:
        draft = requests.draft(service.slug, values, lang)
        record, _ = await requests.create(await access.caller(request, new_user=True), draft)
    except ValidationFailed as err:
        return await render_form(request, service, lang, token, values=values, errors=err.fields, status=422)
    except RateLimited as err:
        banner = ui("form_rate_limited", lang, seconds=err.retry_after)
        resp = await render_form(request, service, lang, token, values=values, banner=banner, status=429)
        resp.headers["Retry-After"] = str(err.retry_after)
        return resp
    raise see_other(progress_url(record["hash"]))


async def _action(request: web.Request, kind: str) -> web.StreamResponse:
    h = check_hash(request.match_info["hash"])
    form = await request.post()
    await csrf.verify(request, form)
    requests, caller = request.app[SERVICE], await access.caller(request)
    try:
        if kind == "otp":
            await requests.submit_otp(caller, h, form.get("otp", ""))
        elif kind == "input":
            value = form.get("value", "")
            await requests.submit_input(caller, h, form.get("id", ""), value if isinstance(value, str) else "")
        elif kind == "resend":
            await requests.resend_otp(caller, h)
            await set_flash(request, h, "resent")
        else:
            await requests.cancel(caller, h)
    except (Conflict, ValidationFailed, RateLimited) as err:
        params = {"seconds": err.retry_after} if isinstance(err, RateLimited) else {}
        await set_flash(request, h, error_key(err), **params)
    raise see_other(progress_url(h))


@routes.post("/requests/{hash}/otp")
async def otp_form(request: web.Request) -> web.StreamResponse:
    return await _action(request, "otp")


@routes.post("/requests/{hash}/input")
async def input_form(request: web.Request) -> web.StreamResponse:
    """Any prompt's answer without JavaScript: the captcha's or text's field, the choice's or
    confirm's button (``value``), with the prompt's ``id``."""
    return await _action(request, "input")


@routes.post("/requests/{hash}/resend-otp")
async def resend_form(request: web.Request) -> web.StreamResponse:
    return await _action(request, "resend")


@routes.post("/requests/{hash}/cancel")
async def cancel_form(request: web.Request) -> web.StreamResponse:
    return await _action(request, "cancel")
