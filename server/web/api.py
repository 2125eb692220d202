"""The JSON API (DESIGN.md, "HTTP API") and the signed bot events endpoint.

HTTP only: each handler reads its body, asks :func:`server.web.access.caller` who is
calling, calls the :class:`~server.requests.service.RequestService` and answers with JSON;
errors become their status codes in ``server.web.edge``."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from server.domain.catalog import SERVICES
from server.domain.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ProtocolError,
    ValidationFailed,
)
from server.domain.i18n import pick_lang
from server.domain.prompts import ID_RE
from server.domain.protocol import MAX_TEXT, parse_bot_event
from server.history import estimates
from server.requests.caller import USER_REF_RE, Caller, check_hash
from server.requests.service import LIST_LIMIT_MAX
from server.web import access
from server.web.typedefs import LIFECYCLE, SERVICE, STORE, VERIFIER

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


@routes.post("/api/requests")
async def post_request(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code="malformed_json")
    slug = body.get("service")
    if not isinstance(slug, str) or not slug:
        raise ValidationFailed("Name the service.", fields={"service": "This field is required."})
    service = request.app[SERVICE]
    lang = pick_lang(request.headers.get("Accept-Language"))
    who = await access.caller(request, new_user=True)
    if who.app_key is None and ("user_ref" in body or "viewer_can_cancel" in body):
        raise ValidationFailed(
            "user_ref and viewer_can_cancel are for an application's API key.",
            fields={k: "Only with an API key." for k in ("user_ref", "viewer_can_cancel") if k in body},
        )
    cancel = body.get("viewer_can_cancel", False)
    if not isinstance(cancel, bool):
        raise ValidationFailed("viewer_can_cancel is true or false.", fields={"viewer_can_cancel": "true or false"})
    draft = service.draft(slug, body.get("data", {}), lang)
    if who.app_key is not None:
        made = await service.create_for_app(who, draft, body.get("user_ref"), viewer_may_cancel=cancel)
        record, token = made.record, made.access_token
        extra: dict[str, Any] = {
            "viewer_token": made.viewer_token,
            "viewer_token_expires_at": iso_utc(made.viewer_expires_at),
            "user_ref": body.get("user_ref"),
        }
    else:
        record, token = await service.create(who, draft)
        extra = {}
    h = record["hash"]
    answer = {
        "hash": h,
        "status": record["status"],
        "access_token": token,
        "expires_at": record.get("expires_at"),
        **urls(request, h),
        **extra,
    }
    return json_response(answer, status=201, headers={"Location": f"/api/requests/{h}"})


def iso_utc(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@routes.get("/api/requests")
async def list_requests(request: web.Request) -> web.Response:
    """An application's live requests, newest first (API key only)."""
    query = request.query
    unknown = set(query) - {"user_ref", "limit", "cursor"}
    if unknown:
        raise ValidationFailed("Unknown parameters.", fields={k: "Not a parameter of this list." for k in unknown})
    bad: dict[str, str] = {}
    user_ref = query.get("user_ref")
    if user_ref is not None and not USER_REF_RE.fullmatch(user_ref):
        bad["user_ref"] = "1 to 128 letters, digits or . _ : @ + -"
    limit = _int_param(query.get("limit", "20"), 1, LIST_LIMIT_MAX)
    if limit is None:
        bad["limit"] = f"A whole number from 1 to {LIST_LIMIT_MAX}."
    cursor = None if "cursor" not in query else _int_param(query["cursor"], 0, 2**62)
    if "cursor" in query and cursor is None:
        bad["cursor"] = "Pass the previous page's next_cursor."
    who = await access.caller(request)
    if bad:
        raise ValidationFailed("Some parameters are not valid.", fields=bad)
    assert limit is not None
    items, after = await request.app[SERVICE].list_for_app(who, user_ref, limit, cursor)
    return json_response({"items": items, "next_cursor": None if after is None else str(after)})


def _int_param(raw: str, low: int, high: int) -> int | None:
    if not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if low <= value <= high else None


@routes.post("/api/requests/{hash}/viewer-token")
async def post_viewer_token(request: web.Request) -> web.Response:
    """A fresh viewer token for one of the app's requests (API key only)."""
    body = await read_json(request) if request.content_length else {}
    if not isinstance(body, dict) or not isinstance(body.get("viewer_can_cancel", False), bool):
        raise ValidationFailed('Send {} or {"viewer_can_cancel": true}.', fields={"viewer_can_cancel": "true or false"})
    token, expires = await request.app[SERVICE].new_viewer_token(
        await access.caller(request), request.match_info["hash"], may_cancel=body.get("viewer_can_cancel", False)
    )
    return json_response({"viewer_token": token, "viewer_token_expires_at": iso_utc(expires)}, status=201)


async def poll(request: web.Request, h: str) -> bytes:
    address = access.client_address(request)
    if access.bearer_token(request) is None:  # a browser: its session cookie is read only past the limit
        return await request.app[SERVICE].poll(address, h, lambda: access.caller(request))
    caller = await access.caller(request)  # a bearer credential: cheap to check, and it may be an app's key

    async def who() -> Caller:
        return caller

    return await request.app[SERVICE].poll(address, h, who, app_key=caller.app_key)


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
        "requires_input",
        "input_request",
        "result_data",
        "error",
        "seq",
    )
    return json_response({k: pub.get(k) for k in keys})


# --------------------------------------------------------------------------- actions


@routes.post("/api/requests/{hash}/otp")
@routes.post("/api/local-requests/{hash}/otp")
async def post_otp(request: web.Request) -> web.Response:
    h = request.match_info["hash"]
    body = await read_json(request)
    if not isinstance(body, dict) or "otp" not in body:
        raise ValidationFailed('Send the code as {"otp": "123456"}.', fields={"otp": "This field is required."})
    record = await request.app[SERVICE].submit_otp(await access.caller(request), h, body["otp"])
    return json_response({"status": record.get("status"), "request": record}, status=202)


@routes.post("/api/requests/{hash}/input")
@routes.post("/api/local-requests/{hash}/input")
async def post_input(request: web.Request) -> web.Response:
    h = request.match_info["hash"]
    body = await read_json(request)
    if not isinstance(body, dict) or "id" not in body or "value" not in body:
        raise ValidationFailed(
            'Send the answer as {"id": "<the prompt\'s id>", "value": "..."}.',
            fields={
                k: "This field is required." for k in ("id", "value") if not isinstance(body, dict) or k not in body
            },
        )
    if not isinstance(body["id"], str) or not ID_RE.fullmatch(body["id"]):
        raise ValidationFailed("The answer is not valid.", fields={"id": "the id of the prompt the record shows"})
    value = body["value"]
    if not isinstance(value, str | bool) or (isinstance(value, str) and len(value) > MAX_TEXT):
        raise ValidationFailed(
            "The answer is not valid.", fields={"value": f"true, false or at most {MAX_TEXT} characters"}
        )
    record = await request.app[SERVICE].submit_input(await access.caller(request), h, body["id"], value)
    return json_response({"status": record.get("status"), "request": record}, status=202)


@routes.post("/api/requests/{hash}/resend-otp")
@routes.post("/api/local-requests/{hash}/resend-otp")
async def post_resend(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].resend_otp(await access.caller(request), request.match_info["hash"])
    return json_response({"status": record.get("status"), "request": record}, status=202)


@routes.post("/api/requests/{hash}/cancel")
@routes.post("/api/local-requests/{hash}/cancel")
async def post_cancel(request: web.Request) -> web.Response:
    record = await request.app[SERVICE].cancel(await access.caller(request), request.match_info["hash"])
    return json_response({"status": record.get("status"), "request": record}, status=202)


# --------------------------------------------------------------------------- bot events


@routes.post("/api/bot/requests/{hash}/events")
async def post_bot_event(request: web.Request) -> web.Response:
    """A bot reports progress or an outcome over HTTP, signed with the shared secret.

    The raw body is verified before anything parses it; the event id is bound to the request
    it was first sent for (a signed body names no request: a captured event cannot be replayed
    onto another one) and applied once; a refused event may be retried with the same id.
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
    check_hash(h)
    store = request.app[STORE]
    claim = await store.claim_event_id(event_id, h)
    if claim == "other":
        raise Conflict("This event id was sent for another request.", code="event_for_another_request")
    if claim == "replayed":
        raise Conflict("This event id was already applied.", code="replayed_event")
    try:
        result = await request.app[LIFECYCLE].apply_event(h, event)
        if result.outcome == "missing":
            raise NotFound()
        if result.outcome == "conflict":
            raise Conflict("The event does not fit the request's current state.", code="state_conflict")
    except BaseException:
        # Not applied: the sender's retry (same webhook-id, same request) must be able to succeed.
        with contextlib.suppress(Exception):
            await store.release_event_id(event_id, h)
        raise
    return json_response({"applied": result.applied, "status": (result.record or {}).get("status")}, status=202)
