"""The OpenAPI document says what the server does: one test per disagreement the fuzz run
(tests/test_fuzz.py) found, each against the document the server serves and a real Redis."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import orjson
from aiohttp.test_utils import TestClient

from server.domain.errors import ProtocolError
from server.domain.protocol import parse_bot_event

CREDIT = {"service": "credit-score-rating", "data": {"national_id": "0012345678", "mobile": "09121234567"}}


async def served(client: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator for ``schema`` whose ``$ref``s resolve inside ``doc``."""
    return jsonschema_rs.validator_for({"allOf": [schema], "components": doc["components"]})


def documented(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answers {status}, documented: {sorted(responses)}"
    response: dict[str, Any] = responses[str(status)]
    return response


async def test_writes_with_the_session_cookie_from_another_site_answer_a_documented_403(
    client: TestClient[Any, Any],
) -> None:
    doc = await served(client)
    h = (await (await client.post("/api/requests", json=CREDIT)).json())["hash"]  # the client keeps the cookie
    writes = [
        ("/api/requests", CREDIT),
        *(
            (f"{prefix}/{h}/{action}", body)
            for prefix in ("/api/requests", "/api/local-requests")
            for action, body in (("otp", {"otp": "123456"}), ("resend-otp", None), ("cancel", None))
        ),
    ]
    for url, body in writes:
        resp = await client.post(url, json=body, headers={"Origin": "https://evil.example"})
        assert resp.status == 403, (url, await resp.text())
        template = url.replace(h, "{hash}")
        schema = documented(doc, "POST", template, 403)["content"]["application/json"]["schema"]
        assert validator(doc, schema).is_valid(await resp.json())
    assert (await (await client.get(f"/api/requests/{h}")).json())["status"] == "pending"  # nothing happened


# Bot events: each is (event, whether server.domain.protocol accepts it). The first two are what the
# fuzz run met: fields of other event types are ignored, and "failed" needs its error.
EVENTS = [
    ({"type": "progress", "progress": 0, "step": "", "message": "", "otp": {}, "result": {}, "error": [None]}, True),
    ({"type": "failed"}, False),
    ({"type": "failed", "error": "The portal is down."}, True),
    ({"type": "failed", "error": "x" * 501}, False),
    ({"type": "progress", "progress": 42.5}, True),
    ({"type": "progress"}, False),
    ({"type": "progress", "progress": 101}, False),
    ({"type": "progress", "progress": 5, "step": "s" * 65}, False),
    ({"type": "progress", "progress": True}, False),
    ({"type": "otp_required"}, True),
    ({"type": "otp_required", "otp": None}, True),
    ({"type": "otp_required", "otp": {"length": 6, "destination_hint": "+98 912", "expires_in": 120}}, True),
    ({"type": "otp_required", "otp": {"length": 3}}, False),
    ({"type": "otp_required", "otp": {"expires_in": None}}, False),
    ({"type": "otp_required", "otp": {"attempts_left": None, "error": None}}, True),
    ({"type": "otp_required", "otp": []}, False),
    ({"type": "completed"}, True),
    ({"type": "completed", "result": {"score": 700}}, True),
    ({"type": "completed", "result": [1]}, False),
    ({"type": "finished"}, False),
    ({"progress": 5}, False),
    ([], False),
]


async def test_the_bot_event_schema_admits_exactly_what_the_server_accepts(client: TestClient[Any, Any]) -> None:
    doc = await served(client)
    body = doc["paths"]["/api/bot/requests/{hash}/events"]["post"]["requestBody"]
    schema = validator(doc, body["content"]["application/json"]["schema"])
    for event, accepted in EVENTS:
        try:
            parse_bot_event(orjson.loads(orjson.dumps(event)))
            parsed = True
        except ProtocolError:
            parsed = False
        assert parsed is accepted, event
        assert schema.is_valid(event) is accepted, event


async def test_history_filters_are_documented_as_the_server_reads_them(client: TestClient[Any, Any]) -> None:
    doc = await served(client)
    parameters = {p["name"]: p for p in doc["paths"]["/api/history"]["get"]["parameters"]}

    # An empty value is no filter (the history page's "any" option sends one).
    resp = await client.get("/api/history", params={"service": "", "status": "", "limit": "", "cursor": ""})
    assert resp.status == 200, await resp.text()
    # (user_ref is no filter: an application's backend names the person, never with nothing)
    assert all(p.get("allowEmptyValue") is True for name, p in parameters.items() if name != "user_ref")

    # A service filter is a slug: anything else is refused, and the document says so.
    slug = jsonschema_rs.validator_for(parameters["service"]["schema"])
    for service, status in (("credit-score-rating", 200), ("بهروزرسانی", 422), ("Credit", 422), ("a" * 65, 422)):
        resp = await client.get("/api/history", params={"service": service})
        assert resp.status == status, (service, await resp.text())
        assert slug.is_valid(service) is (status == 200)

    # A request line over 8 KiB never reaches a handler: aiohttp's parser answers 400, as text.
    resp = await client.get("/api/history", params={"cursor": "€" * 1500})
    assert resp.status == 400
    assert "text/plain" in documented(doc, "GET", "/api/history", 400)["content"]
    assert resp.content_type == "text/plain"
