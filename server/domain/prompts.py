"""What a bot may ask the person mid-job, and what counts as an answer (DESIGN.md, "Any input
from the person").

A prompt has an ``id``, a ``kind`` and per-kind fields:

- ``captcha``: ``image`` (a ``data:image/png;base64,…`` URL, the PNG at most 64 KiB) and ``length``;
- ``choice``: ``options``, 2 to 20 ``{"value", "label"}`` with distinct values;
- ``confirm``: a yes or no;
- ``text``: ``max_length`` and an optional ``pattern`` the whole answer must match, in RE2's
  syntax (matched in linear time: a bot's pattern cannot make an answer take the process's
  CPU; backreferences and lookarounds are refused);
- ``code``: the one-time code, as ``otp`` has always been (it keeps status ``waiting_otp``).

The one owner of both directions: :meth:`Prompt.parse` checks what a bot sends,
:meth:`Prompt.answer` turns what the person typed into the value relayed to the bot (or raises
:class:`ProtocolError`). No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import re2

from server.domain.errors import ProtocolError
from server.domain.i18n import ascii_digits
from server.domain.protocol import OtpPrompt, normalize_otp

Kind = Literal["captcha", "choice", "confirm", "text", "code"]
KINDS: tuple[str, ...] = get_args(Kind)
#: kinds whose answer is a secret by nature (travels like the code, never at rest)
SECRET_KINDS = frozenset({"captcha", "code"})
MAX_IMAGE_BYTES = 64 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URL_PREFIX = "data:image/png;base64,"
#: a prompt's id (also the OpenAPI pattern of ``id`` in an answer)
ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
ID_RE = re.compile(ID_PATTERN[1:-1])
#: how a bot's answer pattern is compiled: errors are the bot's (answered, not logged by RE2),
#: and a compiled pattern takes at most 1 MiB (RE2 caches 128 of them)
PATTERN_OPTIONS = re2.Options()
PATTERN_OPTIONS.log_errors = False
PATTERN_OPTIONS.max_mem = 1 << 20
MAX_OPTIONS = 20
MAX_ANSWER = 500
_YES = frozenset({"yes", "true", "1", "y", "بله"})
_NO = frozenset({"no", "false", "0", "n", "خیر"})


@dataclass(frozen=True)
class Option:
    value: str
    label: str


def _str(o: Mapping[str, Any], key: str, limit: int, *, default: str | None = None) -> str:
    value = o.get(key)
    if value is None and default is not None:
        value = default  # absent or null: bots in other languages send null for "none"
    if not isinstance(value, str):
        raise ProtocolError(f"input.{key} must be a string")
    if len(value) > limit:
        raise ProtocolError(f"input.{key} is longer than {limit} characters")
    return value


def _int(o: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None) -> int | None:
    value = o.get(key)
    if value is None:
        return default  # absent or null, as for strings
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ProtocolError(f"input.{key} must be a number between {lo} and {hi}")
    return int(value)


def png_of(image: str) -> bytes:
    """The PNG bytes of a captcha's data URL, or ProtocolError (not PNG, not base64, too big)."""
    if not image.startswith(DATA_URL_PREFIX):
        raise ProtocolError("input.image must be a data:image/png;base64 URL")
    encoded = image[len(DATA_URL_PREFIX) :]
    if len(encoded) > (MAX_IMAGE_BYTES + 2) // 3 * 4:
        raise ProtocolError(f"input.image is larger than {MAX_IMAGE_BYTES // 1024} KiB")
    try:
        png = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("input.image is not valid base64") from None
    if len(png) > MAX_IMAGE_BYTES:
        raise ProtocolError(f"input.image is larger than {MAX_IMAGE_BYTES // 1024} KiB")
    if not png.startswith(PNG_SIGNATURE):
        raise ProtocolError("input.image is not a PNG")
    return png


@dataclass(frozen=True)
class Prompt:
    """One question for the person; never holds the answer."""

    id: str
    kind: Kind
    label: str = ""
    secret: bool = False
    expires_in: int = 120
    attempts_left: int | None = None
    #: why the previous answer was refused (the bot's words), if it was
    error: str | None = None
    image: str | None = None
    length: int | None = None
    options: tuple[Option, ...] = field(default_factory=tuple)
    max_length: int | None = None
    pattern: str | None = None
    destination_hint: str = ""

    @classmethod
    def parse(cls, value: Any) -> Prompt:
        if not isinstance(value, Mapping):
            raise ProtocolError("input must be a JSON object")
        o = value
        kind = o.get("kind")
        if kind not in KINDS:
            raise ProtocolError(f"input.kind must be one of {', '.join(KINDS)}")
        pid = o.get("id", kind)
        if not isinstance(pid, str) or not ID_RE.fullmatch(pid):
            raise ProtocolError("input.id must be 1-64 letters, digits or _.:-")
        secret = o.get("secret", kind in SECRET_KINDS)
        if not isinstance(secret, bool):
            raise ProtocolError("input.secret must be true or false")
        error = o.get("error")
        common: dict[str, Any] = {
            "id": pid,
            "kind": kind,
            "label": _str(o, "label", 200, default=""),
            # A captcha's or a code's answer is a secret whatever the bot says.
            "secret": secret or kind in SECRET_KINDS,
            "expires_in": _int(o, "expires_in", 10, 3600, 120),
            "attempts_left": _int(o, "attempts_left", 0, 100, None),
            "error": None if error is None else _str(o, "error", 200),
        }
        if kind == "captcha":
            image = o.get("image", "")
            if not isinstance(image, str):
                raise ProtocolError("input.image must be a string")
            png_of(image)
            return cls(**common, image=image, length=_int(o, "length", 1, 32, None))
        if kind == "choice":
            raw = o.get("options")
            if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_OPTIONS:
                raise ProtocolError(f"input.options must be a list of 2 to {MAX_OPTIONS} options")
            options = []
            for item in raw:
                if not isinstance(item, Mapping):
                    raise ProtocolError("each of input.options must be {value, label}")
                val = _str(item, "value", 64)
                options.append(Option(val, _str(item, "label", 200, default=val)))
            if len({opt.value for opt in options}) != len(options):
                raise ProtocolError("input.options must have distinct values")
            return cls(**common, options=tuple(options))
        if kind == "text":
            pattern = o.get("pattern")
            if pattern is not None:
                pattern = _str(o, "pattern", 200)
                try:
                    re2.compile(pattern, PATTERN_OPTIONS)
                except re2.error:
                    raise ProtocolError(
                        "input.pattern must be a regular expression RE2 accepts, of modest size"
                        " (no backreferences or lookarounds)"
                    ) from None
            return cls(**common, max_length=_int(o, "max_length", 1, MAX_ANSWER, 100), pattern=pattern)
        if kind == "code":
            fields = {k: o[k] for k in ("length", "destination_hint") if k in o}
            otp = OtpPrompt.parse({**fields, "expires_in": common["expires_in"]})
            return cls(**common, length=otp.length, destination_hint=otp.destination_hint)
        return cls(**common)  # confirm

    def serialize(self) -> dict[str, Any]:
        """The prompt as the record's ``input_request`` and the bot's event carry it."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "label": self.label,
            "secret": self.secret,
            "expires_in": self.expires_in,
        }
        if self.attempts_left is not None:
            out["attempts_left"] = self.attempts_left
        if self.error:
            out["error"] = self.error
        if self.kind == "captcha":
            out["image"] = self.image
            if self.length is not None:
                out["length"] = self.length
        elif self.kind == "choice":
            out["options"] = [{"value": opt.value, "label": opt.label} for opt in self.options]
        elif self.kind == "text":
            out["max_length"] = self.max_length
            if self.pattern is not None:
                out["pattern"] = self.pattern
        elif self.kind == "code":
            out["length"] = self.length
            out["destination_hint"] = self.destination_hint
        return out

    def as_otp(self) -> OtpPrompt:
        """A ``code`` prompt as the OTP prompt it has always been."""
        return OtpPrompt(
            length=self.length or 6,
            destination_hint=self.destination_hint,
            expires_in=self.expires_in,
            attempts_left=self.attempts_left,
            error=self.error,
        )

    @classmethod
    def of_otp(cls, otp: OtpPrompt, prompt_id: str = "code") -> Prompt:
        return cls(
            id=prompt_id,
            kind="code",
            secret=True,
            expires_in=otp.expires_in,
            attempts_left=otp.attempts_left,
            error=otp.error,
            length=otp.length,
            destination_hint=otp.destination_hint,
        )

    def answer(self, raw: Any) -> str | bool:
        """What the person gave, as relayed to the bot; ProtocolError when it cannot be an
        answer to this prompt (the message names what is expected)."""
        if self.kind == "code":
            return normalize_otp(raw)
        if self.kind == "confirm":
            if isinstance(raw, bool):
                return raw
            word = str(raw).strip().lower() if isinstance(raw, str | int) else ""
            if word in _YES:
                return True
            if word in _NO:
                return False
            raise ProtocolError("answer yes or no")
        if not isinstance(raw, str):
            raise ProtocolError("the answer must be text")
        if self.kind == "choice":
            if raw not in {opt.value for opt in self.options}:
                raise ProtocolError("choose one of the options")
            return raw
        value = ascii_digits(raw).strip()
        if self.kind == "captcha":
            value = value.replace(" ", "")
            if not 1 <= len(value) <= 32:
                raise ProtocolError("type the characters in the picture")
            return value
        limit = self.max_length or MAX_ANSWER
        if not value or len(value) > limit:
            raise ProtocolError(f"the answer must be 1 to {limit} characters")
        if self.pattern is not None and not re2.fullmatch(self.pattern, value, PATTERN_OPTIONS):
            raise ProtocolError("the answer is not in the expected form")
        return value


def prompt_in(record: Mapping[str, Any]) -> Prompt | None:
    """The prompt a record shows (``input_request``), or None when it has none or it is unreadable."""
    raw = record.get("input_request")
    if not isinstance(raw, Mapping):
        return None
    try:
        return Prompt.parse(raw)
    except ProtocolError:
        return None
