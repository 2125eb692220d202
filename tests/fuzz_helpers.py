"""The running system tests/test_fuzz.py aims at: requests in every state, made through the
public API as one browser session, with the demo bots' faults holding some of them there."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests

from server.infra.webhooks import sign
from server.settings import Settings

CREDIT = "credit-score-rating"
VEHICLE = "vehicle-fines"
VIDEO = "video-generation"
NATIONAL_ID = "0012345678"
# Data the demo bots' faults match on (each picks one behaviour).
HOLD = {"prompt": "hold a renderer for the whole run", "duration_seconds": 15}
SILENT_MOBILE = "09120000009"
FATAL_PLATE = "66F666-66"
#: a 1×1 PNG, for a captcha prompt
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
#: a prompt of every kind but the code (which the credit bureau asks itself), and an answer to it
PROMPTS: tuple[tuple[dict[str, Any], Any], ...] = (
    ({"id": "captcha", "kind": "captcha", "image": PNG, "length": 5, "expires_in": 600}, "ABCDE"),
    ({"id": "vehicle", "kind": "choice", "options": [{"value": "a"}, {"value": "b"}], "expires_in": 600}, "b"),
    ({"id": "pay", "kind": "confirm", "label": "Pay 120,000 rials?", "expires_in": 600}, True),
    ({"id": "postcode", "kind": "text", "max_length": 10, "pattern": "[0-9]{10}", "expires_in": 600}, "1234567890"),
)
#: the sets whose requests include one waiting for each kind of prompt (the others: none)
EVERY_PROMPT = ("", "submitInput", "submitInputLocal")


@dataclass(frozen=True)
class Target:
    """A request the fuzzer may aim at, as it was created (its state may have moved on since)."""

    hash: str
    token: str
    state: str
    #: the code the demo portal texted, for requests that were waiting for one
    code: str | None = None
    #: made by the application's backend (API key, with a viewer token) rather than the session
    viewer: str | None = None

    #: a right answer to the prompt shown ({id, value}; the code's too)
    answer: dict[str, Any] | None = None

    @property
    def by_app(self) -> bool:
        return self.viewer is not None


@dataclass
class System:
    url: str
    settings: Settings
    cookie: str
    #: the application's API key (its requests are targets too) and another app's
    app_key: str
    other_app_key: str
    #: requests per operation id; under "" those of the operations that only read
    targets: dict[str, list[Target]] = field(default_factory=dict)
    #: case id → (target, credential) of the cases aimed at a request, for the stranger check
    aimed: dict[str, tuple[Target, str]] = field(default_factory=dict)

    def targets_for(self, operation_id: str | None) -> list[Target]:
        return self.targets.get(operation_id or "") or self.targets[""]


class Builder:
    """Makes requests through the public API, as one browser session, and waits for their states."""

    def __init__(self, config: Settings, app_key: str):
        self.url = config.public_url
        self.bots = config.bot_api_url
        self.secret = config.signing_secret
        self.http = requests.Session()
        self.app_key = app_key
        #: hash → viewer token of the requests the application made
        self.viewers: dict[str, str] = {}

    def create(self, service: str, data: dict[str, Any], *, by_app: bool = False) -> tuple[str, str]:
        body: dict[str, Any] = {"service": service, "data": data}
        if by_app:  # the application's backend, for one of its users (no session cookie)
            body["user_ref"] = "fuzz-user"
            r = requests.post(
                f"{self.url}/api/requests", json=body, headers={"Authorization": f"Bearer {self.app_key}"}, timeout=10
            )
        else:
            r = self.http.post(f"{self.url}/api/requests", json=body, timeout=10)
        assert r.status_code == 201, r.text
        answer = r.json()
        if by_app:
            self.viewers[answer["hash"]] = answer["viewer_token"]
        return answer["hash"], answer["access_token"]

    def status(self, h: str, token: str) -> str:
        r = self.http.get(f"{self.url}/api/requests/{h}", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
        status: str = r.json()["status"]
        return status

    def wait(self, wanted: dict[tuple[str, str], str], timeout: float = 30.0) -> None:
        """Until every (hash, token) is in its wanted status."""
        left = dict(wanted)
        deadline = time.monotonic() + timeout
        while left and time.monotonic() < deadline:
            left = {k: s for k, s in left.items() if self.status(*k) != s}
            if left:
                time.sleep(0.05)
        late = [(h[:12], s, self.status(h, t)) for (h, t), s in left.items()]
        assert not late, f"not reached in {timeout:.0f} s (hash, wanted, status): {late}"

    def cancel(self, h: str, token: str) -> None:
        r = self.http.post(f"{self.url}/api/requests/{h}/cancel", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (202, 409), r.text

    def ask(self, h: str, prompt: dict[str, Any]) -> None:
        """The bot asks the person ``prompt`` (a signed ``input_required`` event)."""
        body = orjson.dumps({"type": "input_required", "input": prompt})
        headers = {"Content-Type": "application/json", **sign(self.secret, body)}
        r = requests.post(f"{self.url}/api/bot/requests/{h}/events", data=body, headers=headers, timeout=10)
        assert r.status_code == 202, r.text

    def fault(self, **fault: Any) -> None:
        r = requests.post(f"{self.bots}/demo/faults", json=fault, timeout=10)
        assert r.status_code == 201, r.text

    def texted_code(self, h: str) -> str:
        r = requests.get(f"{self.bots}/demo/outbox", params={"requestHash": h}, timeout=10)
        code: str = r.json()["messages"][-1]["code"]
        return code


def build_targets(builder: Builder, names: list[str]) -> tuple[list[tuple[str, str]], dict[str, list[Target]]]:
    """Two requests that hold video-generation's two slots for the whole run (so that later ones
    stay pending, queued behind the service's concurrency cap), then, for each of ``names``, one
    request in each state; the application's backend makes some of them (processing, one of
    those waiting for a code, completed, cancelled), the session the others."""
    builder.fault(mode="busy", count=2, service=VIDEO, match=HOLD)
    prompts = {name: PROMPTS if name in EVERY_PROMPT else () for name in names}
    silent = len(names) + sum(map(len, prompts.values()))
    builder.fault(mode="silent", count=silent, service=CREDIT, match={"mobile": SILENT_MOBILE})
    builder.fault(mode="fatal", count=len(names), service=VEHICLE, match={"plate": FATAL_PLATE})
    for n in range(3):  # the codes live longer than the run (the portal's 120 s was shorter than one, loaded)
        builder.fault(mode="long_otp", count=len(names), service=CREDIT, match={"mobile": f"0912123456{n}"})
    holders = [builder.create(VIDEO, HOLD) for _ in range(2)]
    builder.wait({k: "processing" for k in holders})

    # Waiting for an answer: a silent bot's request, asked a prompt through a signed event.
    asking = {
        name: [(p, builder.create(CREDIT, {"national_id": NATIONAL_ID, "mobile": SILENT_MOBILE})) for p in ps]
        for name, ps in prompts.items()
    }
    builder.wait({key: "processing" for keys in asking.values() for _, key in keys})
    for keys in asking.values():
        for (prompt, _), (h, _) in keys:
            builder.ask(h, prompt)
    made: dict[str, list[tuple[str, tuple[str, str]]]] = {}
    for name in names:
        cancelled = builder.create(VEHICLE, {"plate": "12B345-68", "national_id": NATIONAL_ID}, by_app=True)
        builder.cancel(*cancelled)
        made[name] = [
            ("pending", builder.create(VIDEO, {"prompt": "a paper boat on a rainy street", "duration_seconds": 20})),
            # the bot answers 202 and then says nothing: processing until its heartbeat window ends
            ("processing", builder.create(CREDIT, {"national_id": NATIONAL_ID, "mobile": SILENT_MOBILE}, by_app=True)),
            # three: wrong codes, right codes and cancellations use them up
            *(
                (
                    "waiting_otp",
                    builder.create(CREDIT, {"national_id": NATIONAL_ID, "mobile": f"0912123456{n}"}, by_app=n == 1),
                )
                for n in range(3)
            ),
            ("completed", builder.create(VEHICLE, {"plate": "12B345-67", "national_id": NATIONAL_ID}, by_app=True)),
            ("failed", builder.create(VEHICLE, {"plate": FATAL_PLATE, "national_id": NATIONAL_ID})),
            ("cancelled", cancelled),
            *(("waiting_input", key) for _, key in asking[name]),
        ]
    builder.wait({key: state for states in made.values() for state, key in states})
    answers = {key: {"id": p["id"], "value": value} for keys in asking.values() for (p, value), key in keys}

    def target(state: str, key: tuple[str, str]) -> Target:
        code = builder.texted_code(key[0]) if state == "waiting_otp" else None
        answer = {"id": "code", "value": code} if code else answers.get(key)
        return Target(*key, state, code, builder.viewers.get(key[0]), answer)

    targets = {name: [target(state, key) for state, key in states] for name, states in made.items()}
    return holders, targets
