"""Signed bot events: the Standard Webhooks scheme, through its reference library.

``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{raw body}">``; ±5 minutes; several secrets
at once (space-separated ``BOT_WEBHOOK_SECRET``) so one can be rotated
without downtime. The library compares in constant time; this module adds
the rotation loop and turns every malformed header into one error.
"""

from __future__ import annotations

import binascii
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from server.domain.errors import Unauthorized

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_ID_LENGTH = 128


class Verifier:
    def __init__(self, secret_list: Sequence[str]):
        if not secret_list:
            raise ValueError("at least one webhook secret is needed")
        self._hooks = [Webhook(s) for s in secret_list]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """The event id if the raw body is signed by any current secret; else :class:`Unauthorized`."""
        lowered = {k.lower(): v for k, v in headers.items() if k.lower() in HEADERS}
        missing = [h for h in HEADERS if not lowered.get(h)]
        if missing:
            raise Unauthorized(f"Missing signature header: {missing[0]}.", code="bad_signature")
        event_id = lowered["webhook-id"]
        if len(event_id) > MAX_ID_LENGTH:
            raise Unauthorized("webhook-id is too long.", code="bad_signature")
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise Unauthorized("The body is not UTF-8.", code="bad_signature") from None
        reason = "No matching signature."
        for hook in self._hooks:
            try:
                hook.verify(text, lowered, json_parse=False)
                return event_id
            except WebhookVerificationError as exc:
                reason = str(exc) or reason
                if "timestamp" in reason.lower() or "header" in reason.lower():
                    break  # the same for every secret
            except (ValueError, binascii.Error):
                reason = "Malformed webhook-signature header."
                break
        raise Unauthorized(f"Bad signature: {reason}", code="bad_signature")


def new_event_id() -> str:
    """A fresh event id: ``evt_`` and 128 random bits, URL-safe (as the Node SDK mints them)."""
    return "evt_" + secrets.token_urlsafe(16)


def sign(secret: str, body: bytes, *, event_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    """Headers for a signed event (what the bot SDK sends)."""
    event_id = event_id or new_event_id()
    ts = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(event_id, datetime.fromtimestamp(ts, tz=UTC), body.decode())
    return {"webhook-id": event_id, "webhook-timestamp": str(ts), "webhook-signature": signature}
