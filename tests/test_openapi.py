"""The OpenAPI document says what the server does: one test per disagreement the fuzz run
(tests/test_fuzz.py) found, each against the document the server serves and a real Redis."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from aiohttp.test_utils import TestClient

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
