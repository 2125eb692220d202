"""The status messages of a request, keyed: the English text and how a patch carries it.

A record carries ``message_key`` (and ``message_params``) next to the English
``current_message`` so that pages show the message in the reader's language
(the Persian texts are in :mod:`server.domain.i18n`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MESSAGES: Mapping[str, str] = {
    "queued": "Waiting for a free worker…",
    "starting": "Connecting to the service…",
    "retrying": "The service is not answering; trying again (attempt {attempt} of {max}).",
    "working": "The service is working on it…",
    "otp": "Enter the code we sent to {destination}.",
    "otp_wrong": "That code was not accepted. Check it and try again.",
    "checking": "Checking the code…",
    "resending": "Sending a new code…",
    "otp_exhausted": "Too many wrong codes. Please start a new request.",
    "done": "Done.",
    "failed": "The request failed.",
    "cancelled": "Cancelled.",
}


def message(key: str, **params: Any) -> dict[str, Any]:
    """``current_message`` + ``message_key`` (+ params) for a patch."""
    out: dict[str, Any] = {"current_message": MESSAGES[key].format(**params), "message_key": key}
    out["message_params"] = params or None
    return out
