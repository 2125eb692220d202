"""Standard Webhooks signatures: verification, rotation, tampering."""

from __future__ import annotations

import time

import pytest

from server.domain.errors import Unauthorized
from server.infra.webhooks import Verifier, sign
from server.settings import new_webhook_secret

BODY = b'{"type":"progress","progress":10}'


def test_valid_signature_and_rotation() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    verifier = Verifier([new, old])
    assert verifier.verify(BODY, sign(old, BODY, event_id="a")) == "a"
    assert verifier.verify(BODY, sign(new, BODY, event_id="b")) == "b"
    # several signatures in one header: any valid one is enough
    both = sign(new_webhook_secret(), BODY, event_id="c")
    both["webhook-signature"] += " " + sign(new, BODY, event_id="c")["webhook-signature"]
    assert verifier.verify(BODY, both) == "c"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h, b: (h, b[:-1] + b"0"),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b),
        lambda h, b: ({**h, "webhook-signature": "v1,not-base64!"}, b),
        lambda h, b: ({**h, "webhook-signature": "garbage"}, b),
        lambda h, b: ({**h, "webhook-timestamp": "soon"}, b),
        lambda h, b: ({**h, "webhook-id": "other"}, b),
        lambda h, b: (h, b"\xff" + b),
    ],
)
def test_tampering_is_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    secret = new_webhook_secret()
    headers, body = mangle(sign(secret, BODY, event_id="x"), BODY)
    with pytest.raises(Unauthorized):
        Verifier([secret]).verify(body, headers)


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamps_outside_five_minutes_are_refused(skew: int) -> None:
    secret = new_webhook_secret()
    with pytest.raises(Unauthorized):
        Verifier([secret]).verify(BODY, sign(secret, BODY, timestamp=int(time.time()) + skew))
