"""The OpenAPI document's part for embedding applications (``server.web.openapi``): listing an
app's requests, fresh viewer tokens, the element's strings, and the credentials apps hold."""

from __future__ import annotations

from typing import Any

from server.requests.service import LIST_LIMIT_MAX
from server.web.openapi_parts import CROSS_SITE, HASH_PARAM, NULLABLE_STR, RATE_LIMITED, error_response

USER_REF = {"type": "string", "pattern": "^[A-Za-z0-9._:@+-]{1,128}$"}
#: whose history an application's backend reads (with its key only; required then)
HISTORY_USER_REF = {
    "name": "user_ref",
    "in": "query",
    "schema": USER_REF,
    "description": "With an API key: the person whose archived requests to read",
}
#: the error every call with a credential may get
BAD_CREDENTIAL = error_response("The API key is not valid, or the viewer token is forged or expired")

SECURITY_SCHEMES = {
    "app_key": {
        "type": "http",
        "scheme": "bearer",
        "description": "An application's API key (lrk_…, APP_API_KEYS): its app's requests only",
    },
    "viewer": {
        "type": "http",
        "scheme": "bearer",
        "description": "A viewer token (lrv_…): reads and answers one request for a short while",
    },
}


def with_app_fields(create: dict[str, Any]) -> dict[str, Any]:
    """A service's create body plus what an application's backend sends (only with its key)."""
    props = {
        **create["properties"],
        "user_ref": {**USER_REF, "description": "The app's name for the person (with an API key only)"},
        "viewer_can_cancel": {"type": "boolean", "description": "The viewer token may cancel (API key only)"},
    }
    return {**create, "properties": props}


CREATED_FOR_APP = {
    "viewer_token": {"type": "string", "pattern": "^lrv_"},
    "viewer_token_expires_at": {"type": "string"},
    "user_ref": USER_REF,
}

VIEWER_TOKEN = {
    "type": "object",
    "required": ["viewer_token", "viewer_token_expires_at"],
    "properties": {"viewer_token": {"type": "string"}, "viewer_token_expires_at": {"type": "string"}},
}


def paths() -> dict[str, Any]:
    return {
        "/api/requests/{hash}/viewer-token": {
            "post": {
                "summary": "A fresh viewer token for one of the app's requests",
                "operationId": "newViewerToken",
                "parameters": [HASH_PARAM],
                "security": [{"app_key": []}],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "properties": {"viewer_can_cancel": {"type": "boolean"}}}
                        }
                    },
                },
                "responses": {
                    "201": {"description": "Minted", "content": {"application/json": {"schema": VIEWER_TOKEN}}},
                    "400": error_response("Malformed JSON"),
                    "401": BAD_CREDENTIAL,
                    "404": error_response("Unknown, expired or another app's"),
                    "413": error_response("Body over 64 KiB"),
                    "422": error_response("viewer_can_cancel is not a boolean"),
                    **CROSS_SITE,
                    "429": RATE_LIMITED,
                    "503": error_response("Redis unavailable"),
                },
            }
        },
        "/api/embed/strings": {
            "get": {
                "summary": "The words <longrun-progress> shows, in one language",
                "operationId": "embedStrings",
                "parameters": [{"name": "lang", "in": "query", "schema": {"enum": ["en", "fa"]}}],
                "responses": {
                    "200": {
                        "description": "Page strings, record messages, result labels, services' steps",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["lang", "dir", "ui", "messages", "labels", "services", "server_now"],
                                }
                            }
                        },
                    },
                    "422": error_response("Unknown language"),
                },
            }
        },
    }


def list_operation() -> dict[str, Any]:
    return {
        "summary": "The application's live requests (or one person's), newest first",
        "operationId": "listRequests",
        "security": [{"app_key": []}],
        "parameters": [
            {"name": "user_ref", "in": "query", "schema": USER_REF},
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX}},
            # the previous page's next_cursor (creation time in µs)
            {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"}},
        ],
        "responses": {
            "200": {
                "description": "A page; next_cursor is null on the last one",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["items", "next_cursor"],
                            "properties": {
                                "items": {
                                    "type": "array",
                                    "items": {
                                        "allOf": [{"$ref": "#/components/schemas/Record"}],
                                        "required": ["user_ref"],
                                    },
                                },
                                "next_cursor": NULLABLE_STR,
                            },
                        }
                    }
                },
            },
            "401": error_response("No API key, or one that is not valid"),
            "422": error_response("Invalid or unknown parameters (named in error.fields)"),
            "429": RATE_LIMITED,
            "503": error_response("Redis unavailable"),
        },
    }
