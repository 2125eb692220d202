"""``GET /api/openapi.json``: the OpenAPI 3.1 description of the JSON API.

Kept next to the handlers it describes and checked against the running
server by a schema-driven fuzz test (tests/test_fuzz.py).
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from server.domain.catalog import SERVICES
from server.domain.prompts import ID_PATTERN as PROMPT_ID_PATTERN
from server.domain.prompts import KINDS, MAX_IMAGE_BYTES, MAX_OPTIONS
from server.domain.protocol import MAX_TEXT
from server.domain.status import TERMINAL_VALUES, Status
from server.web import openapi_embed
from server.web.openapi_parts import (
    COMMON_ERRORS,
    CROSS_SITE,
    HASH_PARAM,
    HISTORY_PAGE,
    NULLABLE_STR,
    RATE_LIMITED,
    REQUEST_LINE_TOO_LONG,
    SLUG_PATTERN,
    action_op,
    error_response,
    event_schema,
    number_schema,
    ok_response,
    query_filter,
    text_schema,
)

routes = web.RouteTableDef()


def document() -> dict[str, Any]:
    statuses = [s.value for s in Status]
    record = {
        "type": "object",
        "required": ["hash", "status", "progress", "requires_otp", "seq"],
        "properties": {
            "hash": {"type": "string"},
            "service_slug": {"type": "string"},
            "status": {"type": "string", "enum": statuses},
            "step": NULLABLE_STR,
            "steps": {"type": ["object", "null"]},
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "current_message": NULLABLE_STR,
            "message_key": NULLABLE_STR,
            "estimated_duration": {"type": ["number", "null"]},
            "estimated_remaining_time": {"type": ["number", "null"]},
            "requires_otp": {"type": "boolean"},
            "otp_data": {"type": ["object", "null"]},
            "requires_input": {"type": "boolean"},
            # the prompt shown (a captcha's picture only while it is shown; expires_at added)
            "input_request": {
                "type": ["object", "null"],
                "properties": {"id": {"type": "string"}, "kind": {"type": "string", "enum": list(KINDS)}},
            },
            "request_data": {"type": ["object", "null"]},
            "result_data": {"type": ["object", "null"]},
            "error": NULLABLE_STR,
            "user_id": NULLABLE_STR,
            "priority": NULLABLE_STR,
            "attempt": {"type": ["integer", "null"]},
            "created_at": NULLABLE_STR,
            "started_at": NULLABLE_STR,
            "updated_at": NULLABLE_STR,
            "finished_at": NULLABLE_STR,
            "expires_at": NULLABLE_STR,
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
                    # anonymous: an empty page; an app's backend names the person (user_ref)
                    "security": [{}, {"session": []}, {"app_key": []}],
                    "parameters": [
                        openapi_embed.HISTORY_USER_REF,
                        query_filter("service", {"type": "string", "pattern": SLUG_PATTERN}),
                        query_filter("status", {"enum": sorted(TERMINAL_VALUES)}),
                        query_filter("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                        query_filter("cursor", {"type": "string", "maxLength": 200}),
                    ],
                    "responses": {
                        "200": {
                            "description": "A page; next_cursor is null on the last one",
                            "content": {"application/json": {"schema": HISTORY_PAGE}},
                        },
                        "400": REQUEST_LINE_TOO_LONG,
                        "401": openapi_embed.BAD_CREDENTIAL,
                        "422": error_response("Invalid parameters (named in error.fields)"),
                        "503": error_response("PostgreSQL unavailable"),
                    },
                }
            },
            "/api/history/{hash}": {
                "get": {
                    "summary": "One archived request with its stored result",
                    "operationId": "getHistoryEntry",
                    "parameters": [HASH_PARAM, openapi_embed.HISTORY_USER_REF],
                    "security": [{"session": []}, {"app_key": []}],
                    "responses": {
                        "200": {
                            "description": "The archived request",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "401": openapi_embed.BAD_CREDENTIAL,
                        "404": error_response("Unknown or not yours"),
                        "422": error_response("user_ref missing with an API key, or given without one"),
                        "503": error_response("PostgreSQL unavailable"),
                    },
                }
            },
            "/api/services": {
                "get": {
                    "summary": "The service catalog",
                    "operationId": "listServices",
                    "responses": {"200": ok_response("The services", "Catalog")},
                }
            },
            "/api/requests": {
                "get": openapi_embed.list_operation(),
                "post": {
                    "summary": "Create a request",
                    "operationId": "createRequest",
                    # an application's backend: with user_ref, and the answer adds a viewer token
                    "security": [{}, {"session": []}, {"app_key": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateRequest"}}},
                    },
                    "responses": {
                        "201": ok_response("Created and queued", "Created"),
                        "401": openapi_embed.BAD_CREDENTIAL,
                        "404": error_response("Unknown service"),
                        "422": error_response("Invalid fields (per-field messages in error.fields)"),
                        "429": RATE_LIMITED,
                        **CROSS_SITE,
                        **COMMON_ERRORS,
                    },
                },
            },
            "/api/requests/{hash}": {
                "get": {
                    "summary": "The public record",
                    "operationId": "getRequest",
                    "parameters": [HASH_PARAM],
                    "security": [{"session": []}, {"bearer": []}, {"viewer": []}, {"app_key": []}],
                    "responses": {
                        "200": ok_response("The record", "Record"),
                        "401": openapi_embed.BAD_CREDENTIAL,
                        "404": error_response("Unknown, expired or not yours"),
                        "429": RATE_LIMITED,
                        "503": error_response("Redis unavailable"),
                    },
                }
            },
            "/api/requests/{hash}/otp": {
                "post": action_op(
                    "Hand the one-time code to the bot", "submitOtp", body={"$ref": "#/components/schemas/OtpBody"}
                )
            },
            "/api/requests/{hash}/input": {
                "post": action_op(
                    "Answer the prompt the bot shows (input_request; a code prompt's answer is the code)",
                    "submitInput",
                    body={"$ref": "#/components/schemas/InputBody"},
                )
            },
            "/api/requests/{hash}/resend-otp": {"post": action_op("Ask the bot to send a new code", "resendOtp")},
            "/api/requests/{hash}/cancel": {"post": action_op("Cancel the request", "cancelRequest")},
            "/api/local-requests/{hash}/status": {
                "get": {
                    "summary": "The original polling format",
                    "operationId": "getLocalStatus",
                    "parameters": [HASH_PARAM],
                    "security": [{"session": []}, {"bearer": []}, {"viewer": []}, {"app_key": []}],
                    "responses": {
                        "200": ok_response("Status", "LocalStatus"),
                        "401": openapi_embed.BAD_CREDENTIAL,
                        "404": error_response("Unknown, expired or not yours"),
                        "429": RATE_LIMITED,
                        "503": error_response("Redis unavailable"),
                    },
                }
            },
            "/api/local-requests/{hash}/otp": {
                "post": action_op(
                    "Alias of /api/requests/{hash}/otp", "submitOtpLocal", body={"$ref": "#/components/schemas/OtpBody"}
                )
            },
            "/api/local-requests/{hash}/input": {
                "post": action_op(
                    "Alias of /api/requests/{hash}/input",
                    "submitInputLocal",
                    body={"$ref": "#/components/schemas/InputBody"},
                )
            },
            "/api/local-requests/{hash}/resend-otp": {"post": action_op("Alias of …/resend-otp", "resendOtpLocal")},
            "/api/local-requests/{hash}/cancel": {"post": action_op("Alias of …/cancel", "cancelRequestLocal")},
            "/api/bot/requests/{hash}/events": {
                "post": {
                    "summary": "A bot reports progress or an outcome (Standard Webhooks signature)",
                    "operationId": "postBotEvent",
                    "parameters": [
                        HASH_PARAM,
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
                        "400": error_response("Malformed JSON"),
                        "401": error_response("Bad or stale signature"),
                        "404": error_response("Unknown request"),
                        "409": error_response("Replayed event id, or the event does not fit the state"),
                        "413": error_response("Body over 64 KiB"),
                        "422": error_response("Not a valid event"),
                        "503": error_response("Redis unavailable"),
                    },
                }
            },
            **openapi_embed.paths(),
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
                **openapi_embed.SECURITY_SCHEMES,
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
                "CreateRequest": {"oneOf": [openapi_embed.with_app_fields(s.json_schema()) for s in SERVICES]},
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
                        **openapi_embed.CREATED_FOR_APP,
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
                "InputBody": {
                    "type": "object",
                    "required": ["id", "value"],
                    "properties": {
                        "id": {"type": "string", "pattern": PROMPT_ID_PATTERN},
                        "value": {"oneOf": [{"type": "string", "maxLength": MAX_TEXT}, {"type": "boolean"}]},
                    },
                },
                # What server.domain.prompts.Prompt.parse accepts, one variant per kind.
                "Prompt": {
                    "oneOf": [prompt_schema(kind, extra) for kind, extra in PROMPT_KINDS.items()],
                    "discriminator": {"propertyName": "kind"},
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
                        event_schema(
                            "progress",
                            ["progress"],
                            {"progress": number_schema(0, 100), "step": text_schema(64), "message": text_schema()},
                        ),
                        event_schema("otp_required", [], {"otp": {"$ref": "#/components/schemas/OtpPrompt"}}),
                        event_schema("input_required", ["input"], {"input": {"$ref": "#/components/schemas/Prompt"}}),
                        event_schema("completed", [], {"result": {"type": ["object", "null"]}}),
                        event_schema("failed", ["error"], {"error": {"type": "string", "maxLength": MAX_TEXT}}),
                    ],
                    "discriminator": {"propertyName": "type"},
                },
                "OtpPrompt": {
                    "type": ["object", "null"],
                    "properties": {
                        "length": number_schema(4, 10),
                        "destination_hint": text_schema(64),
                        "expires_in": number_schema(10, 3600),
                        "attempts_left": {**number_schema(0, 100), "type": ["number", "null"]},
                        "error": text_schema(200),
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


#: a PNG's data URL: base64 in whole quads whose first bytes are the PNG signature
PNG_DATA_URL = (
    "^data:image/png;base64,iVBORw0KGgo[A-Za-z0-9+/](?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
)
#: the fields each kind of prompt adds to the common ones
PROMPT_KINDS: dict[str, dict[str, Any]] = {
    "captcha": {
        "image": {"type": "string", "pattern": PNG_DATA_URL, "maxLength": 22 + (MAX_IMAGE_BYTES + 2) // 3 * 4},
        "length": {**number_schema(1, 32), "type": ["number", "null"]},
    },
    "choice": {
        "options": {
            "type": "array",
            "minItems": 2,
            "maxItems": MAX_OPTIONS,
            "uniqueItems": True,
            "description": "the options' values are distinct",
            "items": {
                "type": "object",
                "required": ["value"],
                "properties": {"value": {"type": "string", "maxLength": 64}, "label": text_schema(200)},
            },
        }
    },
    "confirm": {},
    "text": {
        "max_length": {**number_schema(1, 500), "type": ["number", "null"]},
        "pattern": {"type": ["string", "null"], "format": "regex", "maxLength": 200},
    },
    "code": {"length": number_schema(4, 10), "destination_hint": text_schema(64)},
}


def prompt_schema(kind: str, extra: dict[str, Any]) -> dict[str, Any]:
    required = {"captcha": ["image"], "choice": ["options"]}.get(kind, [])
    return {
        "type": "object",
        "required": ["kind", *required],
        "properties": {
            "kind": {"const": kind},
            "id": {"type": "string", "pattern": PROMPT_ID_PATTERN},
            "label": text_schema(200),
            "secret": {"type": "boolean"},
            "expires_in": {**number_schema(10, 3600), "type": ["number", "null"]},
            "attempts_left": {**number_schema(0, 100), "type": ["number", "null"]},
            "error": {**text_schema(200), "type": ["string", "null"]},
            **extra,
        },
    }


_BODY = orjson.dumps(document())


@routes.get("/api/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
