"""Building blocks of the OpenAPI document (``server.web.openapi``): parameters, responses,
schemas and the shape every request action shares."""

from __future__ import annotations

from typing import Any

from server.domain.protocol import MAX_TEXT

HASH_PARAM = {"name": "hash", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 80}}
NULLABLE_STR = {"type": ["string", "null"]}
#: a service slug as server.history.queries reads the filter
SLUG_PATTERN = "^[a-z0-9][a-z0-9-]{0,63}$"
# aiohttp's HTTP parser refuses a request line over 8190 bytes before any handler runs, with
# a plain-text 400: only a query string of free text (a cursor) can grow that long.
REQUEST_LINE_TOO_LONG = {
    "description": "Request line over 8 KiB (refused by the HTTP layer, in plain text)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def query_filter(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    # server.history.queries reads an empty value as no value (a form's "any" option sends one).
    return {"name": name, "in": "query", "allowEmptyValue": True, "schema": schema}


def error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def ok_response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


RATE_LIMITED = {
    "description": "Rate limited",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

HISTORY_PAGE = {
    "type": "object",
    "required": ["items", "next_cursor", "enabled"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": NULLABLE_STR,
        "enabled": {"type": "boolean"},
    },
}

COMMON_ERRORS = {
    "400": error_response("Malformed JSON"),
    "413": error_response("Body over 64 KiB"),
    "503": error_response("Redis unavailable"),
}
# server.web.edge.refuse_cross_site: a write made with the session cookie (no bearer token)
# that the browser says comes from another site.
CROSS_SITE = {
    "403": error_response(
        "Sent with the session cookie from another site (Origin / Sec-Fetch-Site); or a viewer token "
        "that may not do this (create, or cancel unless minted to)"
    )
}


def number_schema(lo: int, hi: int) -> dict[str, Any]:
    # Bots written in any language may send 42.0; the parser takes any number and truncates.
    return {"type": "number", "minimum": lo, "maximum": hi}


def text_schema(limit: int = MAX_TEXT) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": limit}


def event_schema(kind: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **properties},
    }


def action_op(summary: str, op_id: str, *, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "parameters": [HASH_PARAM],
        "security": [{"session": []}, {"bearer": []}, {"viewer": []}, {"app_key": []}],
        "responses": {
            "202": ok_response("Accepted", "ActionAnswer"),
            "401": error_response("The API key is not valid, or the viewer token is forged or expired"),
            "404": error_response("Unknown, expired or not yours"),
            "409": error_response("Not allowed in the request's current state"),
            "429": RATE_LIMITED,
            **CROSS_SITE,
            **COMMON_ERRORS,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["422"] = error_response("Malformed code")
    return op
