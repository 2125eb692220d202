"""The JSON API (DESIGN.md, "HTTP API") and the signed bot events endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from typing import Any

import orjson
from aiohttp import web

from server.domain.catalog import SERVICES, get_service
from server.domain.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from server.domain.i18n import pick_lang
from server.domain.protocol import normalize_otp, parse_bot_event
from server.domain.status import Status
from server.history import estimates
from server.record import new_record, public_view, token_digest
from server.web import access
from server.web.typedefs import CACHE, DISPATCHER, LIFECYCLE, POLL_LIMITER, SETTINGS, STORE, VERIFIER

routes = web.RouteTableDef()

JSON = "application/json"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON, headers=headers)


MAX_API_BODY = 64 * 1024


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: 413 over 64 KiB, 400 if malformed."""
    if (request.content_length or 0) > MAX_API_BODY:
        raise PayloadTooLarge("The body is larger than 64 KiB.")
    raw = await request.read()
    if len(raw) > MAX_API_BODY:
        raise PayloadTooLarge("The body is larger than 64 KiB.")
    if not raw.strip():
        raise BadRequest("The body must be a JSON object.", code="malformed_json")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON ({exc.msg}).", code="malformed_json") from None


async def rate_limit(request: web.Request, name: str, who: str, limit: tuple[int, float]) -> None:
    burst, per = limit
    wait = await request.app[STORE].hit_rate_limit(name, who, burst=burst, per=per)
    if wait > 0:
        raise RateLimited("Too many requests; slow down.", retry_after=wait)


def client_address(request: web.Request) -> str:
    """The client's address: the peer, or — when the peer is a trusted proxy — the nearest
    address in X-Forwarded-For that is not one of ours (what a client writes there itself
    is to the left of what our proxies appended, so it is never believed)."""
    peer = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return peer


def _in(address: str, networks: tuple[str, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(n, strict=False) for n in networks)


async def load_visible(request: web.Request, request_hash: str) -> dict[str, Any]:
    """The stored record if the caller may see it; the same 404 otherwise."""
    access.check_hash(request_hash)
    record = await request.app[STORE].get(request_hash)
    if record is None or not await access.can_see(request, record):
        raise NotFound()
    return record


def urls(request: web.Request, h: str) -> dict[str, str]:
    origin = request.url.origin()
    ws_scheme = "wss" if origin.scheme == "https" else "ws"
    return {
        "progress_url": str(origin.with_path(f"/requests/{h}")),
        "status_url": str(origin.with_path(f"/api/requests/{h}")),
        "ws_url": str(origin.with_scheme(ws_scheme).with_path(f"/ws/requests/{h}")),
    }


# --------------------------------------------------------------------------- catalog


@routes.get("/api/services")
async def list_services(request: web.Request) -> web.Response:
    lang = pick_lang(request.headers.get("Accept-Language"), request.query.get("lang"))
    store = request.app[STORE]
    learned = await estimates.estimated_durations(store.redis, store.keys, SERVICES)
    return json_response({"services": [s.describe(lang, estimate=learned[s.slug]) for s in SERVICES]})


# --------------------------------------------------------------------------- create / read


async def create_request(request: web.Request, slug: str, data: Any, *, lang: str = "en") -> tuple[dict[str, Any], str]:
    """Validate, store and enqueue a new request; the public record and its access token.

    Shared by the JSON API and the HTML form.
    """
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    service = get_service(slug)
    clean = service.validate(data, lang)
    uid = await access.user_id(request)
    assert uid is not None
    await rate_limit(request, "create-user", uid, settings.create_rate)
    await rate_limit(request, "create-addr", client_address(request), settings.create_rate_per_address)
    token = access.new_access_token()
    h = store.keys.new_hash()
    record = new_record(
        request_hash=h,
        service_slug=service.slug,
        request_data=clean,
        user_id=uid,
        token_hash=token_digest(token),
        estimated_duration=await estimates.estimated_duration(store.redis, store.keys, service),
        priority=service.priority,
        first_step=service.steps[0].name if service.steps else "",
    )
    created = await store.create(record)
    if created is None:  # 2^-128: a clash of fresh random hashes
        raise Unavailable("Could not create the request; please try again.")
    try:
        await asyncio.to_thread(request.app[DISPATCHER].run, h, service)
    except Exception:
        await request.app[LIFECYCLE].fail(h, "The request could not be queued. Please try again.")
        raise
    return created, token


@routes.post("/api/requests")
async def post_request(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="malformed_json")
    slug = body.get("service")
    if not isinstance(slug, str) or not slug:
        raise ValidationFailed("Name the service.", fields={"service": "This field is required."})
    lang = pick_lang(request.headers.get("Accept-Language"))
    record, token = await create_request(request, slug, body.get("data", {}), lang=lang)
    h = record["hash"]
    answer = {
        "hash": h,
        "status": record["status"],
        "access_token": token,
        "expires_at": record.get("expires_at"),
        **urls(request, h),
    }
    return json_response(answer, status=201, headers={"Location": f"/api/requests/{h}"})


async def poll(request: web.Request, h: str) -> bytes:
    """The public record JSON for a polling client: rate-limited per address (batched GCRA),
    read from the process's pub/sub-fed cache, same access rule as everywhere."""
    wait = request.app[POLL_LIMITER].hit(client_address(request))
    if wait > 0:
        raise RateLimited("Too many requests; slow down.", retry_after=wait)
    access.check_hash(h)
    entry = await request.app[CACHE].get(h)
    if entry is None or not await access.may_see(request, h, entry.user_id, entry.token):
        raise NotFound()
    return entry.public


@routes.get("/api/requests/{hash}")
async def get_request(request: web.Request) -> web.Response:
    return web.Response(body=await poll(request, request.match_info["hash"]), content_type=JSON)


@routes.get("/api/local-requests/{hash}/status")
async def get_local_status(request: web.Request) -> web.Response:
    pub = orjson.loads(await poll(request, request.match_info["hash"]))
    keys = (
        "hash",
        "status",
        "progress",
        "estimated_remaining_time",
        "requires_otp",
        "step",
        "current_message",
        "otp_data",
        "result_data",
        "error",
        "seq",
    )
    return json_response({k: pub.get(k) for k in keys})


# --------------------------------------------------------------------------- actions


async def submit_otp(request: web.Request, h: str, raw_code: Any) -> dict[str, Any]:
    """Hand a code to the bot (shared by the API, the socket and the form)."""
    settings = request.app[SETTINGS]
    store = request.app[STORE]
    record = await load_visible(request, h)
    try:
        code = normalize_otp(raw_code)
    except ProtocolError as exc:
        raise ValidationFailed("The code is not valid.", fields={"otp": str(exc)}) from None
    service = get_service(str(record.get("service_slug")))
    answer = await store.submit_otp(
        h,
        code,
        code_ttl=settings.otp_code_ttl,
        max_attempts=settings.otp_max_attempts,
        early_allowed=service.may_ask_otp,
        heartbeat=service.limits(settings.time_scale).heartbeat,
    )
    del code
    if answer.outcome == "missing":
        raise NotFound()
    if answer.outcome == "exhausted":
        raise RateLimited(
            "Too many codes were tried for this request; start a new one.",
            retry_after=settings.request_ttl,
            code="otp_attempts_exhausted",
        )
    if answer.outcome == "busy":
        raise Conflict("A code is already being checked.", code="otp_pending")
    if answer.outcome == "conflict":
        raise Conflict("This request is not waiting for a code.", code="not_waiting_for_otp")
    if answer.outcome == "accepted":
        seq = int((answer.record or {}).get("seq") or 0)
        await asyncio.to_thread(request.app[DISPATCHER].check_otp, h, service, seq)
    return public_view(answer.record or {})


async def resend_otp(request: web.Request, h: str) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    record = await load_visible(request, h)
    service = get_service(str(record.get("service_slug")))
    answer = await request.app[STORE].request_resend(
        h, interval=settings.otp_resend_interval, max_resends=settings.otp_max_resends
    )
    if answer.outcome == "missing":
        raise NotFound()
    if answer.outcome == "too_early":
        raise RateLimited(
            "A new code can be sent a little later.", retry_after=float(answer.detail or 1), code="resend_too_early"
        )
    if answer.outcome == "exhausted":
        raise RateLimited(
            "No more codes can be sent for this request.", retry_after=settings.request_ttl, code="resend_exhausted"
        )
    if answer.outcome == "conflict":
        raise Conflict("This request is not waiting for a code.", code="not_waiting_for_otp")
    await asyncio.to_thread(request.app[DISPATCHER].resend_otp, h, service, int(answer.detail or 1))
    return public_view(answer.record or {})


async def cancel(request: web.Request, h: str) -> dict[str, Any]:
    await load_visible(request, h)
    result = await request.app[LIFECYCLE].cancel(h)
    if result.outcome == "missing":
        raise NotFound()
    if not result.applied:
        raise Conflict("This request has already finished.", code="already_finished")
    tell_bot = result.previous_status != Status.PENDING.value
    await asyncio.to_thread(request.app[DISPATCHER].cancel, h, tell_bot=tell_bot)
    return public_view(result.record or {})


@routes.post("/api/requests/{hash}/otp")
@routes.post("/api/local-requests/{hash}/otp")
async def post_otp(request: web.Request) -> web.Response:
    h = request.match_info["hash"]
    body = await read_json(request)
    if not isinstance(body, dict) or "otp" not in body:
        raise ValidationFailed('Send the code as {"otp": "123456"}.', fields={"otp": "This field is required."})
    record = await submit_otp(request, h, body["otp"])
    return json_response({"status": record.get("status"), "request": record}, status=202)


@routes.post("/api/requests/{hash}/resend-otp")
@routes.post("/api/local-requests/{hash}/resend-otp")
async def post_resend(request: web.Request) -> web.Response:
    record = await resend_otp(request, request.match_info["hash"])
    return json_response({"status": record.get("status"), "request": record}, status=202)


@routes.post("/api/requests/{hash}/cancel")
@routes.post("/api/local-requests/{hash}/cancel")
async def post_cancel(request: web.Request) -> web.Response:
    record = await cancel(request, request.match_info["hash"])
    return json_response({"status": record.get("status"), "request": record}, status=202)


# --------------------------------------------------------------------------- bot events


@routes.post("/api/bot/requests/{hash}/events")
async def post_bot_event(request: web.Request) -> web.Response:
    """A bot reports progress or an outcome over HTTP, signed with the shared secret.

    The raw body is verified before anything parses it; the event id is
    remembered only once the event is known to be valid, so a refused call
    changes nothing.
    """
    h = request.match_info["hash"]
    raw = await request.read()
    event_id = request.app[VERIFIER].verify(raw, request.headers)
    try:
        event = parse_bot_event(orjson.loads(raw))
    except orjson.JSONDecodeError:
        raise BadRequest("The event is not valid JSON.", code="malformed_json") from None
    except ProtocolError as exc:
        raise ValidationFailed(f"The event is not valid: {exc}", fields={"event": str(exc)}) from None
    access.check_hash(h)
    store = request.app[STORE]
    if await store.get_raw(h) is None:
        raise NotFound()
    if not await store.remember_event_id(event_id):
        raise Conflict("This event id was already applied.", code="replayed_event")
    try:
        result = await request.app[LIFECYCLE].apply_event(h, event)
        if result.outcome == "missing":
            raise NotFound()
        if result.outcome == "conflict":
            raise Conflict("The event does not fit the request's current state.", code="state_conflict")
    except BaseException:
        # Not applied: the sender's retry (same webhook-id) must be able to succeed.
        with contextlib.suppress(Exception):
            await store.forget_event_id(event_id)
        raise
    return json_response({"applied": result.applied, "status": (result.record or {}).get("status")}, status=202)
