"""Protocol messages: WebSocket frames, bot events and bot answers (DESIGN.md).

Small frozen dataclasses with ``parse`` and ``serialize``; every malformed
input raises :class:`ProtocolError`. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import orjson

from server.domain.errors import ProtocolError
from server.domain.i18n import ascii_digits

if TYPE_CHECKING:  # prompts builds on OtpPrompt and normalize_otp below; it is imported where parsed
    from server.domain.prompts import Prompt

MAX_TEXT = 500
MAX_RESULT_BYTES = 256 * 1024
OTP_RE = re.compile(r"[0-9]{4,10}")


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


def _text(value: Any, what: str, *, limit: int = MAX_TEXT, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"{what} must be a string")
    if len(value) > limit:
        raise ProtocolError(f"{what} is longer than {limit} characters")
    return value


def _int(value: Any, what: str, lo: int, hi: int, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ProtocolError(f"{what} must be a number")
    if not lo <= value <= hi:
        raise ProtocolError(f"{what} must be between {lo} and {hi}")
    return int(value)


#: Redis' Lua JSON keeps 14 significant digits: larger integers would come back rounded
#: (12345678901234567 → 1.2345678901235e+16), so they travel as strings instead.
_EXACT_INTEGERS = 10**14


MAX_DEPTH = 32


def _exact(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError(f"result is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) >= _EXACT_INTEGERS:
        return str(value)
    if isinstance(value, dict):
        return {k: _exact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v, depth + 1) for v in value]
    return value


def _result(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    result: dict[str, Any] = _exact(dict(_obj(value, "result")))
    if len(orjson.dumps(result)) > MAX_RESULT_BYTES:
        raise ProtocolError(f"result is larger than {MAX_RESULT_BYTES} bytes")
    return result


def normalize_otp(raw: Any) -> str:
    """A one-time code as typed (Persian digits and spaces allowed) → ASCII digits, or ProtocolError."""
    if not isinstance(raw, str | int) or isinstance(raw, bool):
        raise ProtocolError("otp must be a string of digits")
    code = ascii_digits(str(raw)).replace(" ", "").replace("-", "")
    if not OTP_RE.fullmatch(code):
        raise ProtocolError("otp must be 4 to 10 digits")
    return code


# --------------------------------------------------------------------------- OTP prompt


@dataclass(frozen=True)
class OtpPrompt:
    """What the bot says about the code it sent: never the code itself."""

    length: int = 6
    destination_hint: str = ""
    expires_in: int = 120
    attempts_left: int | None = None
    #: why the previous code was refused ("wrong code"), if it was
    error: str | None = None

    @classmethod
    def parse(cls, value: Any) -> OtpPrompt:
        o = _obj(value if value is not None else {}, "otp")
        return cls(
            length=_int(o.get("length", 6), "otp.length", 4, 10) or 6,
            destination_hint=_text(o.get("destination_hint", ""), "otp.destination_hint", limit=64) or "",
            expires_in=_int(o.get("expires_in", 120), "otp.expires_in", 10, 3600) or 120,
            attempts_left=_int(o.get("attempts_left"), "otp.attempts_left", 0, 100, optional=True),
            error=_text(o.get("error"), "otp.error", limit=200),
        )

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "length": self.length,
            "destination_hint": self.destination_hint,
            "expires_in": self.expires_in,
        }
        if self.attempts_left is not None:
            out["attempts_left"] = self.attempts_left
        if self.error:
            out["error"] = self.error
        return out


# --------------------------------------------------------------------------- bot events


@dataclass(frozen=True)
class ProgressEvent:
    type: ClassVar[str] = "progress"
    progress: int
    step: str | None = None
    message: str | None = None

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "progress": self.progress}
        if self.step is not None:
            out["step"] = self.step
        if self.message is not None:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class OtpRequiredEvent:
    type: ClassVar[str] = "otp_required"
    otp: OtpPrompt

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "otp": self.otp.serialize()}


@dataclass(frozen=True)
class CompletedEvent:
    type: ClassVar[str] = "completed"
    result: dict[str, Any]

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "result": self.result}


@dataclass(frozen=True)
class FailedEvent:
    type: ClassVar[str] = "failed"
    error: str

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "error": self.error}


@dataclass(frozen=True)
class InputRequiredEvent:
    """The bot asks the person something other than (or, kind ``code``, as well as) the code."""

    type: ClassVar[str] = "input_required"
    prompt: Prompt

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "input": self.prompt.serialize()}


BotEvent = ProgressEvent | OtpRequiredEvent | InputRequiredEvent | CompletedEvent | FailedEvent


def _prompt(value: Any) -> Prompt:
    from server.domain.prompts import Prompt

    return Prompt.parse(value)


def parse_bot_event(value: Any) -> BotEvent:
    o = _obj(value, "event")
    kind = o.get("type")
    if kind == "progress":
        return ProgressEvent(
            progress=_int(o.get("progress"), "progress", 0, 100) or 0,
            step=_text(o.get("step"), "step", limit=64),
            message=_text(o.get("message"), "message"),
        )
    if kind == "otp_required":
        return OtpRequiredEvent(OtpPrompt.parse(o.get("otp")))
    if kind == "input_required":
        return InputRequiredEvent(_prompt(o.get("input")))
    if kind == "completed":
        return CompletedEvent(_result(o.get("result")))
    if kind == "failed":
        return FailedEvent(_text(o.get("error"), "error", optional=False) or "")
    raise ProtocolError("type must be one of progress, otp_required, input_required, completed, failed")


# --------------------------------------------------------------------------- bot answers


@dataclass(frozen=True)
class Success:
    result: dict[str, Any]


@dataclass(frozen=True)
class NeedsOtp:
    otp: OtpPrompt


@dataclass(frozen=True)
class NeedsInput:
    prompt: Prompt


@dataclass(frozen=True)
class BotFailure:
    error: str
    retryable: bool = False


@dataclass(frozen=True)
class Accepted:
    """202: the bot goes on by itself and reports through the SDK or signed events."""


BotAnswer = Success | NeedsOtp | NeedsInput | BotFailure | Accepted


def parse_bot_answer(http_status: int, body: Any) -> BotAnswer:
    """Map the bot API's answer to ``/run`` (or ``/resend-otp``) onto a :data:`BotAnswer`."""
    if http_status == 202:
        return Accepted()
    if http_status != 200:
        raise ProtocolError(f"unexpected HTTP status {http_status}")
    o = _obj(body, "answer")
    status = o.get("status")
    if status == "success":
        return Success(_result(o.get("result")))
    if status == "otp_required":
        return NeedsOtp(OtpPrompt.parse(o.get("otp")))
    if status == "input_required":
        return NeedsInput(_prompt(o.get("input")))
    if status == "error":
        # The bot's own words, cut to what a record keeps (Lifecycle.fail does the same): a long
        # message must not turn into "the service gave an answer we could not read".
        error = o.get("error")
        return BotFailure(
            _text(error[:MAX_TEXT] if isinstance(error, str) else error, "error", optional=False)
            or "The service reported an error.",
            retryable=bool(o.get("retryable", False)),
        )
    if status in ("accepted", "ok"):
        return Accepted()
    raise ProtocolError("status must be success, otp_required, input_required, error or accepted")


# --------------------------------------------------------------------------- WebSocket frames


@dataclass(frozen=True)
class OtpFrame:
    otp: str


@dataclass(frozen=True)
class InputFrame:
    """An answer to the prompt ``id``; checked against the prompt by the request service."""

    id: str
    value: str | bool


@dataclass(frozen=True)
class ResendOtpFrame:
    pass


@dataclass(frozen=True)
class CancelFrame:
    pass


@dataclass(frozen=True)
class PingFrame:
    pass


ClientFrame = OtpFrame | InputFrame | ResendOtpFrame | CancelFrame | PingFrame


def parse_client_frame(text: str | bytes) -> ClientFrame:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("frames must be JSON") from None
    o = _obj(value, "frame")
    kind = o.get("type")
    if kind == "otp":
        return OtpFrame(normalize_otp(o.get("otp")))
    if kind == "input":
        pid, value = o.get("id"), o.get("value")
        if not isinstance(pid, str) or not 1 <= len(pid) <= 64:
            raise ProtocolError("id must name the prompt")
        if not isinstance(value, str | bool) or (isinstance(value, str) and len(value) > MAX_TEXT):
            raise ProtocolError(f"value must be true, false or a string of at most {MAX_TEXT} characters")
        return InputFrame(pid, value)
    if kind == "resend_otp":
        return ResendOtpFrame()
    if kind == "cancel":
        return CancelFrame()
    if kind == "ping":
        return PingFrame()
    raise ProtocolError("type must be one of otp, input, resend_otp, cancel, ping")


def serialize_client_frame(frame: ClientFrame) -> str:
    if isinstance(frame, OtpFrame):
        return orjson.dumps({"type": "otp", "otp": frame.otp}).decode()
    if isinstance(frame, InputFrame):
        return orjson.dumps({"type": "input", "id": frame.id, "value": frame.value}).decode()
    kind = {ResendOtpFrame: "resend_otp", CancelFrame: "cancel", PingFrame: "ping"}[type(frame)]
    return orjson.dumps({"type": kind}).decode()


def snapshot_frame(public_record_json: bytes | str, *, recovered: bool = True) -> str:
    """``{"type": "snapshot", "request": …}`` built around already-serialized JSON (no re-encode).

    ``recovered=False``: a resuming page asked for the changes after a seq the request's log no
    longer reaches back to; this snapshot replaces its state (``"recovered": false``).
    """
    body = public_record_json.decode() if isinstance(public_record_json, bytes) else public_record_json
    head = '{"type":"snapshot","recovered":false,"request":' if not recovered else '{"type":"snapshot","request":'
    return head + body + "}"


def update_frame(public_record_json: bytes | str) -> str:
    body = public_record_json.decode() if isinstance(public_record_json, bytes) else public_record_json
    return '{"type":"update","request":' + body + "}"


def sse_event(event: str, seq: int, public_record_json: bytes) -> bytes:
    """One Server-Sent Event: ``event: snapshot|update``, ``id: <seq>``, ``data: <record>``.

    The record is compact JSON (no newline inside), so it is a single ``data:`` line. An id is
    left out for a record without a usable seq (an old bot's): the browser then keeps the last one.
    """
    head = b"event: " + event.encode() + b"\n"
    if seq >= 0:
        head += b"id: " + str(seq).encode() + b"\n"
    return head + b"data: " + public_record_json.replace(b"\n", b"") + b"\n\n"


def parse_since(value: str | None) -> int | None:
    """A resuming client's last seq (``?since=`` or ``Last-Event-ID``); None when not given.

    :raises ProtocolError: not a non-negative integer of at most 20 digits
    """
    if value is None or value == "":
        return None
    if len(value) > 20 or not value.isdigit() or not value.isascii():
        raise ProtocolError("since must be a non-negative integer (the last seq received)")
    return int(value)


def error_frame(code: str, message: str) -> str:
    return orjson.dumps({"type": "error", "code": code, "message": message}).decode()


PONG_FRAME = '{"type":"pong"}'
