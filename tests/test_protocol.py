"""Protocol messages: round trips and refusals (no I/O)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from server.domain.errors import ProtocolError
from server.domain.protocol import (
    Accepted,
    BotFailure,
    CancelFrame,
    CompletedEvent,
    FailedEvent,
    NeedsOtp,
    OtpFrame,
    OtpPrompt,
    OtpRequiredEvent,
    PingFrame,
    ProgressEvent,
    ResendOtpFrame,
    Success,
    normalize_otp,
    parse_bot_answer,
    parse_bot_event,
    parse_client_frame,
    serialize_client_frame,
    snapshot_frame,
    update_frame,
)


@pytest.mark.parametrize(
    "event",
    [
        ProgressEvent(40, "captcha", "Solving"),
        ProgressEvent(0),
        OtpRequiredEvent(OtpPrompt(6, "+98 912 *** **34", 120, 3, "wrong")),
        CompletedEvent({"score": 700, "items": []}),
        FailedEvent("portal down"),
    ],
)
def test_bot_events_round_trip(event: Any) -> None:
    assert parse_bot_event(orjson.loads(orjson.dumps(event.serialize()))) == event


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"type": "nope"},
        {"type": "progress"},
        {"type": "progress", "progress": 101},
        {"type": "progress", "progress": True},
        {"type": "progress", "progress": 5, "step": 7},
        {"type": "otp_required", "otp": {"length": 40}},
        {"type": "completed", "result": "yes"},
        {"type": "completed", "result": {"blob": "x" * 300_000}},
        {"type": "failed"},
    ],
)
def test_bad_bot_events_are_refused(raw: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_bot_event(raw)


@pytest.mark.parametrize(
    ("status", "body", "answer"),
    [
        (200, {"status": "success", "result": {"a": 1}}, Success({"a": 1})),
        (200, {"status": "otp_required", "otp": {"length": 5}}, NeedsOtp(OtpPrompt(length=5))),
        (200, {"status": "error", "error": "x", "retryable": True}, BotFailure("x", True)),
        (200, {"status": "error", "error": "x"}, BotFailure("x", False)),
        # a long message is the bot's words, cut to what a record keeps, not an unreadable answer
        (200, {"status": "error", "error": "y" * 900}, BotFailure("y" * 500, False)),
        (202, None, Accepted()),
        (202, {"status": "accepted"}, Accepted()),
    ],
)
def test_bot_answers(status: int, body: Any, answer: Any) -> None:
    assert parse_bot_answer(status, body) == answer


@pytest.mark.parametrize(("status", "body"), [(200, {"status": "??"}), (404, {}), (200, [1])])
def test_bad_bot_answers(status: int, body: Any) -> None:
    with pytest.raises(ProtocolError):
        parse_bot_answer(status, body)


@pytest.mark.parametrize("frame", [OtpFrame("123456"), ResendOtpFrame(), CancelFrame(), PingFrame()])
def test_client_frames_round_trip(frame: Any) -> None:
    assert parse_client_frame(serialize_client_frame(frame)) == frame


@pytest.mark.parametrize(
    "text", ["", "nope", "[]", '{"type": "otp"}', '{"type": "otp", "otp": "12"}', '{"type": "shout"}', '{"type": 1}']
)
def test_bad_client_frames(text: str) -> None:
    with pytest.raises(ProtocolError):
        parse_client_frame(text)


def test_otp_normalization() -> None:
    assert normalize_otp("۱۲۳ ۴۵۶") == "123456"
    assert normalize_otp(123456) == "123456"
    for bad in ("12345a", "", "1" * 11, True, None, 1.5):
        with pytest.raises(ProtocolError):
            normalize_otp(bad)


def test_server_frames_wrap_serialized_json_without_reencoding() -> None:
    record = b'{"hash":"req_x","seq":3}'
    assert orjson.loads(snapshot_frame(record)) == {"type": "snapshot", "request": {"hash": "req_x", "seq": 3}}
    assert orjson.loads(update_frame(record.decode()))["type"] == "update"


def test_integers_redis_lua_would_round_travel_as_strings() -> None:
    event = parse_bot_event({"type": "completed", "result": {"id": 12345678901234567, "n": 42, "xs": [10**15, True]}})
    assert isinstance(event, CompletedEvent)
    assert event.result == {"id": "12345678901234567", "n": 42, "xs": ["1000000000000000", True]}


def test_deeply_nested_results_are_refused() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    with pytest.raises(ProtocolError):
        parse_bot_event({"type": "completed", "result": {"x": deep}})
