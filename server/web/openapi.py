"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the JSON API.

Kept next to the handlers it describes and checked against the running
server by a schema-driven fuzz test (tests/test_fuzz.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from server.domain.catalog import SERVICES
from server.domain.protocol import MAX_TEXT
from server.domain.status import TERMINAL_VALUES, Status

routes = web.RouteTableDef()

_HASH = {"name": "hash", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 80}}
_NULLABLE_STR = {"type": ["string", "null"]}
#: a service slug as server.history.queries reads the filter
_SLUG = "^[a-z0-9][a-z0-9-]{0,63}$"
# aiohttp's HTTP parser refuses a request line over 8190 bytes before any handler runs, with
# a plain-text 400: only a query string of free text (a cursor) can grow that long.
_REQUEST_LINE_TOO_LONG = {
    "description": "Request line over 8 KiB (refused by the HTTP layer, in plain text)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


def _filter(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    # server.history.queries reads an empty value as no value (a form's "any" option sends one).
    return {"name": name, "in": "query", "allowEmptyValue": True, "schema": schema}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_RATE = {
    "description": "Rate limited",
    "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

_HISTORY_PAGE = {
    "type": "object",
    "required": ["items", "next_cursor", "enabled"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object"}},
        "next_cursor": _NULLABLE_STR,
        "enabled": {"type": "boolean"},
    },
}

_COMMON = {"400": _error("Malformed JSON"), "413": _error("Body over 64 KiB"), "503": _error("Redis unavailable")}
# server.web.middleware.refuse_cross_site: a write made with the session cookie (no bearer token)
# that the browser says comes from another site.
_CROSS_SITE = {"403": _error("Sent with the session cookie from another site (Origin / Sec-Fetch-Site)")}


def _number(lo: int, hi: int) -> dict[str, Any]:
    # Bots written in any language may send 42.0; the parser takes any number and truncates.
    return {"type": "number", "minimum": lo, "maximum": hi}


def _text(limit: int = MAX_TEXT) -> dict[str, Any]:
    return {"type": ["string", "null"], "maxLength": limit}


def _event(kind: str, required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **properties},
    }


def _action(summary: str, op_id: str, *, body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "operationId": op_id,
        "parameters": [_HASH],
        "security": [{"session": []}, {"bearer": []}],
        "responses": {
            "202": _ok("Accepted", "ActionAnswer"),
            "404": _error("Unknown, expired or not yours"),
            "409": _error("Not allowed in the request's current state"),
            "429": _RATE,
            **_CROSS_SITE,
            **_COMMON,
        },
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        op["responses"]["422"] = _error("Malformed code")
    return op


def document() -> dict[str, Any]:
    statuses = [s.value for s in Status]
    record = {
        "type": "object",
        "required": ["hash", "status", "progress", "requires_otp", "seq"],
        "properties": {
            "hash": {"type": "string"},
            "service_slug": {"type": "string"},
            "status": {"type": "string", "enum": statuses},
            "step": _NULLABLE_STR,
            "steps": {"type": ["object", "null"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "current_message": _NULLABLE_STR,
            "message_key": _NULLABLE_STR,
            "estimated_duration": {"type": ["number", "null"]},
            "estimated_remaining_time": {"type": ["number", "null"]},
            "requires_otp": {"type": "boolean"},
            "otp_data": {"type": ["object", "null"]},
            "request_data": {"type": ["object", "null"]},
            "result_data": {"type": ["object", "null"]},
            "error": _NULLABLE_STR,
            "user_id": _NULLABLE_STR,
            "priority": _NULLABLE_STR,
            "attempt": {"type": ["integer", "null"]},
            "created_at": _NULLABLE_STR,
            "started_at": _NULLABLE_STR,
            "updated_at": _NULLABLE_STR,
            "finished_at": _NULLABLE_STR,
            "expires_at": _NULLABLE_STR,
            "seq": {"type": "integer"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Longrun",
            "version": "1.0.0",
            "description": "Watch long jobs live. See DESIGN.md for the WebSocket frames and the bot API.",
        },
        "paths": {
            "/api/history": {
                "get": {
                    "summary": "The session's archived requests, newest first, in keyset pages",
                    "operationId": "listHistory",
                    "security": [{}, {"session": []}],  # anonymous: an empty page
                    "parameters": [
                        _filter("service", {"type": "string", "pattern": _SLUG}),
                        _filter("status", {"enum": sorted(TERMINAL_VALUES)}),
                        _filter("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                        _filter("cursor", {"type": "string", "maxLength": 200}),
                    ],
                    "responses": {
                        "200": {
                            "description": "A page; next_cursor is null on the last one",
                            "content": {"application/json": {"schema": _HISTORY_PAGE}},
                        },
                        "400": _REQUEST_LINE_TOO_LONG,
                        "422": _error("Invalid parameters (named in error.fields)"),
                        "503": _error("PostgreSQL unavailable"),
                    },
                }
            },
            "/api/history/{hash}": {
                "get": {
                    "summary": "One archived request with its stored result",
                    "operationId": "getHistoryEntry",
                    "parameters": [_HASH],
                    "security": [{"session": []}],
                    "responses": {
                        "200": {
                            "description": "The archived request",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "404": _error("Unknown or not yours"),
                        "503": _error("PostgreSQL unavailable"),
                    },
                }
            },
            "/api/services": {
                "get": {
                    "summary": "The service catalog",
                    "operationId": "listServices",
                    "responses": {"200": _ok("The services", "Catalog")},
                }
            },
            "/api/requests": {
                "post": {
                    "summary": "Create a request",
                    "operationId": "createRequest",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateRequest"}}},
                    },
                    "responses": {
                        "201": _ok("Created and queued", "Created"),
                        "404": _error("Unknown service"),
                        "422": _error("Invalid fields (per-field messages in error.fields)"),
                        "429": _RATE,
                        **_CROSS_SITE,
                        **_COMMON,
                    },
                }
            },
            "/api/requests/{hash}": {
                "get": {
                    "summary": "The public record",
                    "operationId": "getRequest",
                    "parameters": [_HASH],
                    "security": [{"session": []}, {"bearer": []}],
                    "responses": {
                        "200": _ok("The record", "Record"),
                        "404": _error("Unknown, expired or not yours"),
                        "429": _RATE,
                        "503": _error("Redis unavailable"),
                    },
                }
            },
            "/api/requests/{hash}/otp": {
                "post": _action(
                    "Hand the one-time code to the bot", "submitOtp", body={"$ref": "#/components/schemas/OtpBody"}
                )
            },
            "/api/requests/{hash}/resend-otp": {"post": _action("Ask the bot to send a new code", "resendOtp")},
            "/api/requests/{hash}/cancel": {"post": _action("Cancel the request", "cancelRequest")},
            "/api/local-requests/{hash}/status": {
                "get": {
                    "summary": "The original polling format",
                    "operationId": "getLocalStatus",
                    "parameters": [_HASH],
                    "security": [{"session": []}, {"bearer": []}],
                    "responses": {
                        "200": _ok("Status", "LocalStatus"),
                        "404": _error("Unknown, expired or not yours"),
                        "429": _RATE,
                        "503": _error("Redis unavailable"),
                    },
                }
            },
            "/api/local-requests/{hash}/otp": {
                "post": _action(
                    "Alias of /api/requests/{hash}/otp", "submitOtpLocal", body={"$ref": "#/components/schemas/OtpBody"}
                )
            },
            "/api/local-requests/{hash}/resend-otp": {"post": _action("Alias of …/resend-otp", "resendOtpLocal")},
            "/api/local-requests/{hash}/cancel": {"post": _action("Alias of …/cancel", "cancelRequestLocal")},
            "/api/bot/requests/{hash}/events": {
                "post": {
                    "summary": "A bot reports progress or an outcome (Standard Webhooks signature)",
                    "operationId": "postBotEvent",
                    "parameters": [
                        _HASH,
                        {"name": "webhook-id", "in": "header", "required": True, "schema": {"type": "string"}},
                        {"name": "webhook-timestamp", "in": "header", "required": True, "schema": {"type": "string"}},
                        {"name": "webhook-signature", "in": "header", "required": True, "schema": {"type": "string"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BotEvent"}}},
                    },
                    "responses": {
                        "202": {
                            "description": "Applied (or ignored: the request had already finished)",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": _error("Malformed JSON"),
                        "401": _error("Bad or stale signature"),
                        "404": _error("Unknown request"),
                        "409": _error("Replayed event id, or the event does not fit the state"),
                        "413": _error("Body over 64 KiB"),
                        "422": _error("Not a valid event"),
                        "503": _error("Redis unavailable"),
                    },
                }
            },
            "/healthz": {
                "get": {"summary": "Liveness", "operationId": "healthz", "responses": {"200": {"description": "Alive"}}}
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness (Redis reachable)",
                    "operationId": "readyz",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
                }
            },
        },
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "longrun_session"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "The request's access_token"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
                            },
                        }
                    },
                },
                "CreateRequest": {"oneOf": [s.json_schema() for s in SERVICES]},
                "Created": {
                    "type": "object",
                    "required": [
                        "hash",
                        "status",
                        "access_token",
                        "progress_url",
                        "status_url",
                        "ws_url",
                        "expires_at",
                    ],
                    "properties": {
                        "hash": {"type": "string"},
                        "status": {"type": "string", "enum": statuses},
                        "access_token": {"type": "string"},
                        "progress_url": {"type": "string"},
                        "status_url": {"type": "string"},
                        "ws_url": {"type": "string"},
                        "expires_at": {"type": "string"},
                    },
                },
                "Record": record,
                "LocalStatus": {
                    "type": "object",
                    "required": ["hash", "status", "progress", "estimated_remaining_time", "requires_otp"],
                    "properties": {
                        "hash": {"type": "string"},
                        "status": {"type": "string", "enum": statuses},
                        "progress": {"type": "integer"},
                        "estimated_remaining_time": {"type": ["number", "null"]},
                        "requires_otp": {"type": "boolean"},
                    },
                },
                "ActionAnswer": {
                    "type": "object",
                    "required": ["status", "request"],
                    "properties": {
                        "status": {"type": "string", "enum": statuses},
                        "request": {"$ref": "#/components/schemas/Record"},
                    },
                },
                "OtpBody": {
                    "type": "object",
                    "required": ["otp"],
                    "properties": {"otp": {"type": "string", "pattern": "^[0-9]{4,10}$"}},
                },
                # What server.domain.protocol.parse_bot_event accepts, one variant per type. Fields the
                # type does not use are ignored, so a newer bot may send more than this names.
                "BotEvent": {
                    "oneOf": [
                        _event(
                            "progress",
                            ["progress"],
                            {"progress": _number(0, 100), "step": _text(64), "message": _text()},
                        ),
                        _event("otp_required", [], {"otp": {"$ref": "#/components/schemas/OtpPrompt"}}),
                        _event("completed", [], {"result": {"type": ["object", "null"]}}),
                        _event("failed", ["error"], {"error": {"type": "string", "maxLength": MAX_TEXT}}),
                    ],
                    "discriminator": {"propertyName": "type"},
                },
                "OtpPrompt": {
                    "type": ["object", "null"],
                    "properties": {
                        "length": _number(4, 10),
                        "destination_hint": _text(64),
                        "expires_in": _number(10, 3600),
                        "attempts_left": {**_number(0, 100), "type": ["number", "null"]},
                        "error": _text(200),
                    },
                },
                "Catalog": {
                    "type": "object",
                    "required": ["services"],
                    "properties": {"services": {"type": "array", "items": {"type": "object"}}},
                },
            },
        },
    }


_BODY = orjson.dumps(document())


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
