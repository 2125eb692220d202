"""The service catalog: the one declarative list of what people can request.

Each :class:`Service` says what the form asks (fields and their validation),
how long the work usually takes, which queue it runs on, how long the bot may
take, whether it may stop for a one-time code and how many may run at once.
``GET /api/services`` serves it; forms, validation, jobs and estimates read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from server.domain.errors import NotFound, ValidationFailed
from server.domain.i18n import DEFAULT_LANG, Text, ascii_digits, field_error

#: What is trimmed from typed text: Unicode's White_Space characters, named once for
#: :meth:`Field.clean` and for the patterns of :meth:`Field.json_schema`. "Whitespace" is not
#: one set: Python's str.strip() also trims \x1c-\x1f, ECMA-262's \s also matches \ufeff, so
#: with either on one side the OpenAPI document promised values the server refused.
BLANKS = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_BLANK = r"[\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_SOLID = "[^" + _BLANK[1:]
#: what a person may type for one digit (ascii_digits maps them), and may put between digits
_DIGIT_FORMS = ("0۰٠", "1۱١", "2۲٢", "3۳٣", "4۴٤", "5۵٥", "6۶٦", "7۷٧", "8۸٨", "9۹٩")
_SEPARATORS = "[ -]*"

FieldType = Literal["text", "tel", "number", "textarea", "select"]
Priority = Literal["high", "default", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "default", "low")


@dataclass(frozen=True)
class Field:
    name: str
    label: Text
    type: FieldType = "text"
    required: bool = True
    pattern: str | None = None
    #: what the pattern means, shown when it does not match
    pattern_hint: Text | None = None
    min_length: int | None = None
    max_length: int = 200
    min_value: float | None = None
    max_value: float | None = None
    choices: tuple[tuple[str, Text], ...] = ()
    #: an example of what to type: a Text when it is words (numbers and codes need none)
    placeholder: str | Text = ""
    #: numeric input typed on a Persian keyboard is normalized to ASCII digits first
    digits: bool = False
    #: browser autofill hint
    autocomplete: str = "off"

    def clean(self, raw: Any, lang: str = DEFAULT_LANG) -> tuple[Any, str | None]:
        """The cleaned value and an error message (None when valid)."""
        if raw is None or (isinstance(raw, str) and raw.strip(BLANKS) == ""):
            return None, field_error("required", lang) if self.required else None
        if self.type == "number":
            return self._clean_number(raw, lang)
        if not isinstance(raw, str):
            return None, field_error("type", lang)
        if len(raw) > self.max_length:  # bounded as typed, before any clean-up
            return None, field_error("max_length", lang, max=self.max_length)
        value = raw.strip(BLANKS)
        if self.digits:
            value = ascii_digits(value).replace(" ", "").replace("-", "")
        elif self.pattern:
            value = ascii_digits(value)  # a plate typed on a Persian keyboard: its digits as 0-9
        if self.min_length is not None and len(value) < self.min_length:
            return None, field_error("min_length", lang, min=self.min_length)
        if len(value) > self.max_length:
            return None, field_error("max_length", lang, max=self.max_length)
        if self.choices and value not in {c for c, _ in self.choices}:
            return None, field_error("choice", lang)
        # ASCII: \d and \w would otherwise accept digits of any script (Mongolian, Thai…).
        if self.pattern and not re.fullmatch(self.pattern, value, re.ASCII):
            hint = self.pattern_hint or Text("Check the format.", "قالب را بررسی کنید.")
            return None, hint(lang)
        return value, None

    def _clean_number(self, raw: Any, lang: str) -> tuple[Any, str | None]:
        if isinstance(raw, bool):
            return None, field_error("number", lang)
        if isinstance(raw, str):
            try:
                raw = float(ascii_digits(raw.strip(BLANKS)))
            except ValueError:
                return None, field_error("number", lang)
        if not isinstance(raw, int | float) or raw != raw or raw in (float("inf"), float("-inf")):
            return None, field_error("number", lang)
        value = int(raw) if float(raw).is_integer() else float(raw)
        if self.min_value is not None and value < self.min_value:
            return None, field_error("min_value", lang, min=_num(self.min_value))
        if self.max_value is not None and value > self.max_value:
            return None, field_error("max_value", lang, max=_num(self.max_value))
        return value, None

    def json_schema(self) -> dict[str, Any]:
        """A JSON Schema of exactly the values :meth:`clean` accepts (for the OpenAPI document)."""
        if self.type == "number":
            out: dict[str, Any] = {"type": "number"}
            if self.min_value is not None:
                out["minimum"] = self.min_value
            if self.max_value is not None:
                out["maximum"] = self.max_value
            return out
        if self.choices:
            return {"type": "string", "enum": [v for v, _ in self.choices]}
        # Values are trimmed before checks: allow surrounding blanks, require the core.
        if self.pattern and self.digits:
            core = _typed_digits(self.pattern)
        elif self.pattern:
            core = self.pattern.replace("[0-9]", _ANY_DIGIT)  # Persian digits are taken as 0-9
        else:
            least = max(1, self.min_length or 1)
            core = _SOLID if least == 1 else rf"{_SOLID}[\s\S]{{{least - 2},}}{_SOLID}"
        return {"type": "string", "maxLength": self.max_length, "pattern": rf"^{_BLANK}*(?:{core}){_BLANK}*$"}

    def example(self, lang: str = DEFAULT_LANG) -> str:
        """The placeholder in ``lang``."""
        return self.placeholder(lang) if isinstance(self.placeholder, Text) else self.placeholder

    def describe(self, lang: str = DEFAULT_LANG) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "label": self.label(lang),
            "type": self.type,
            "required": self.required,
            "pattern": self.pattern,
            "max_length": self.max_length,
        }
        if self.min_length is not None:
            out["min_length"] = self.min_length
        if self.min_value is not None:
            out["min_value"] = self.min_value
        if self.max_value is not None:
            out["max_value"] = self.max_value
        if self.choices:
            out["choices"] = [{"value": v, "label": t(lang)} for v, t in self.choices]
        return out


#: a digit as a person may type it: ASCII, Persian or Arabic-Indic (ascii_digits maps them)
_ANY_DIGIT = f"[{''.join(_DIGIT_FORMS)}]"

_DIGIT_TOKEN = re.compile(r"\[0-9\](?:\{(\d+)\})?|(\d)")


def _typed_digits(pattern: str) -> str:
    """``pattern`` (digits only: ``[0-9]``, ``[0-9]{n}``, a literal digit) as a person may type
    it: Persian or Arabic-Indic digits, spaces and hyphens anywhere (:meth:`Field.clean` maps
    and drops them before it matches)."""
    out, at = [_SEPARATORS], 0
    for token in _DIGIT_TOKEN.finditer(pattern):
        if token.start() != at:
            raise ValueError(f"a digits field's pattern may only hold digit tokens: {pattern!r}")
        at = token.end()
        forms = f"[{_DIGIT_FORMS[int(token[2])]}]" if token[2] else _ANY_DIGIT
        out.append(f"(?:{forms}{_SEPARATORS}){{{token[1]}}}" if token[1] else f"{forms}{_SEPARATORS}")
    if at != len(pattern):
        raise ValueError(f"a digits field's pattern may only hold digit tokens: {pattern!r}")
    return "".join(out)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


@dataclass(frozen=True)
class Step:
    name: str
    label: Text


@dataclass(frozen=True)
class Limits:
    #: seconds the bot may take for the whole request (waiting for the person excluded)
    deadline: float
    #: seconds the bot may stay silent before the request is failed
    heartbeat: float
    #: RQ's hard limit for one phase
    job_timeout: int


@dataclass(frozen=True)
class Service:
    slug: str
    title: Text
    summary: Text
    fields: tuple[Field, ...]
    steps: tuple[Step, ...]
    #: seconds, before learned estimates take over
    estimated_duration: float
    priority: Priority = "default"
    #: seconds the bot may take for the whole request (the deadline), and per HTTP call
    bot_timeout: float = 180.0
    may_ask_otp: bool = False
    #: how many requests of this service may run at once (RQ RateLimit)
    concurrency: int = 5
    #: seconds the bot may stay silent before the request is failed
    heartbeat_window: float = 90.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def limits(self, time_scale: float = 1.0) -> Limits:
        """Deadline, heartbeat window and RQ job timeout, scaled for tests and demos."""
        deadline = self.bot_timeout * time_scale
        # RQ's timeout sits above the deadline so that our own timeout answers first.
        return Limits(deadline, self.heartbeat_window * time_scale, int(deadline) + 30)

    def step_label(self, name: str, lang: str = DEFAULT_LANG) -> str:
        for s in self.steps:
            if s.name == name:
                return s.label(lang)
        return name.replace("_", " ").capitalize()

    def validate(self, data: Any, lang: str = DEFAULT_LANG) -> dict[str, Any]:
        """Cleaned request data; raises :class:`ValidationFailed` with a message per field."""
        if not isinstance(data, Mapping):
            raise ValidationFailed("`data` must be an object with the form's fields.", fields={})
        errors: dict[str, str] = {}
        known = {f.name for f in self.fields}
        for name in data:
            if name not in known:
                errors[str(name)[:64]] = field_error("unknown", lang)
        clean: dict[str, Any] = {}
        for f in self.fields:
            value, error = f.clean(data.get(f.name), lang)
            if error:
                errors[f.name] = error
            elif value is not None:
                clean[f.name] = value
        if errors:
            raise ValidationFailed("Some fields are not valid.", fields=errors)
        return clean

    def json_schema(self) -> dict[str, Any]:
        """``{"service": slug, "data": {...}}`` for this service, as JSON Schema."""
        return {
            "type": "object",
            "required": ["service", "data"],
            "properties": {
                "service": {"const": self.slug},
                "data": {
                    "type": "object",
                    "properties": {f.name: f.json_schema() for f in self.fields},
                    "required": [f.name for f in self.fields if f.required],
                    "additionalProperties": False,
                },
            },
        }

    def describe(self, lang: str = DEFAULT_LANG, *, estimate: float | None = None) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "title": self.title(lang),
            "summary": self.summary(lang),
            "fields": [f.describe(lang) for f in self.fields],
            "steps": [{"name": s.name, "label": s.label(lang)} for s in self.steps],
            "estimated_duration": round(estimate if estimate is not None else self.estimated_duration),
            "requires_otp": self.may_ask_otp,
            "priority": self.priority,
        }


NATIONAL_ID = Field(
    "national_id",
    Text("National ID", "کد ملی"),
    type="text",
    pattern=r"[0-9]{10}",
    pattern_hint=Text("A national ID has 10 digits.", "کد ملی ۱۰ رقم است."),
    digits=True,
    max_length=20,
    placeholder="0012345678",
)
MOBILE = Field(
    "mobile",
    Text("Mobile number", "شماره موبایل"),
    type="tel",
    pattern=r"09[0-9]{9}",
    pattern_hint=Text("Use the form 09xxxxxxxxx (11 digits).", "به شکل ۰۹xxxxxxxxx (۱۱ رقم) وارد کنید."),
    digits=True,
    max_length=20,
    placeholder="09121234567",
    autocomplete="tel",
)

SERVICES: tuple[Service, ...] = (
    Service(
        slug="credit-score-rating",
        title=Text("Credit score report", "گزارش رتبه اعتباری"),
        summary=Text(
            "Logs in to the credit bureau, solves the captcha, confirms with the code sent "
            "to your phone and fetches your report.",
            "به سامانه اعتبارسنجی وارد می‌شود، کپچا را حل می‌کند، با کدی که به موبایل شما "
            "ارسال می‌شود تأیید می‌کند و گزارش را دریافت می‌کند.",
        ),
        fields=(NATIONAL_ID, MOBILE),
        steps=(
            Step("login", Text("Logging in", "ورود به سامانه")),
            Step("captcha", Text("Solving the captcha", "حل کپچا")),
            Step("otp", Text("Confirming with your code", "تأیید با کد پیامکی")),
            Step("report", Text("Fetching the report", "دریافت گزارش")),
        ),
        estimated_duration=60,
        priority="default",
        bot_timeout=180,
        may_ask_otp=True,
        concurrency=5,
    ),
    Service(
        slug="vehicle-fines",
        title=Text("Vehicle fines", "خلافی خودرو"),
        summary=Text(
            "Looks up the unpaid traffic fines of a vehicle.",
            "جریمه‌های پرداخت‌نشده خودرو را استعلام می‌کند.",
        ),
        fields=(
            Field(
                "plate",
                Text("Plate number", "شماره پلاک"),
                # the letter: Latin or Persian (the Arabic block without its two sets of digits)
                pattern=r"[0-9]{2}[A-Za-z\u0600-\u065F\u066A-\u06EF\u06FA-\u06FF][0-9]{3}-?[0-9]{2}",
                pattern_hint=Text("Write the plate like 12B345-67.", "پلاک را به شکل ۱۲ب۳۴۵-۶۷ بنویسید."),
                max_length=20,
                placeholder="12B345-67",
            ),
            NATIONAL_ID,
        ),
        steps=(
            Step("login", Text("Logging in", "ورود به سامانه")),
            Step("search", Text("Finding the vehicle", "یافتن خودرو")),
            Step("fetch", Text("Fetching fines", "دریافت جریمه‌ها")),
            Step("summarize", Text("Adding them up", "جمع‌بندی")),
        ),
        estimated_duration=20,
        priority="high",
        bot_timeout=60,
        may_ask_otp=False,
        concurrency=10,
        heartbeat_window=45,
    ),
    Service(
        slug="video-generation",
        title=Text("Video generation", "ساخت ویدیو"),
        summary=Text(
            "Renders a short video from a text prompt. Long; you can leave the tab open in the "
            "background and we will call you back.",
            "از یک متن، ویدیوی کوتاهی می‌سازد. طولانی است؛ می‌توانید زبانه را در پس‌زمینه باز بگذارید و ما خبرتان می‌کنیم.",
        ),
        fields=(
            Field(
                "prompt",
                Text("What should the video show?", "ویدیو چه چیزی نشان دهد؟"),
                type="textarea",
                min_length=3,
                max_length=500,
                placeholder=Text("A paper boat crossing a rainy street", "قایقی کاغذی که از خیابانی بارانی می‌گذرد"),
            ),
            Field(
                "duration_seconds",
                Text("Length (seconds)", "مدت (ثانیه)"),
                type="number",
                min_value=5,
                max_value=60,
                placeholder="15",
            ),
        ),
        steps=(
            Step("queued", Text("Waiting for a renderer", "در انتظار رندر")),
            Step("storyboard", Text("Drawing the storyboard", "طراحی استوری‌بورد")),
            Step("render", Text("Rendering frames", "رندر فریم‌ها")),
            Step("encode", Text("Encoding the video", "کدگذاری ویدیو")),
        ),
        estimated_duration=120,
        priority="low",
        bot_timeout=300,
        may_ask_otp=False,
        concurrency=2,
        heartbeat_window=60,
    ),
    # Served by the Node.js demo bot (bots/js/demo, written with the Node SDK): BOT_API_URLS
    # routes it there.
    Service(
        slug="parcel-tracking",
        title=Text("Parcel tracking", "رهگیری مرسوله"),
        summary=Text(
            "Asks the post office where your parcel is and lists its journey so far.",
            "از اداره پست می‌پرسد مرسوله شما کجاست و مسیر آن را تا امروز فهرست می‌کند.",
        ),
        fields=(
            Field(
                "tracking_number",
                Text("Tracking number", "کد رهگیری"),
                pattern=r"[A-Za-z]{2}[0-9]{9}[A-Za-z]{2}",
                pattern_hint=Text(
                    "A tracking number looks like RR123456789IR (2 letters, 9 digits, 2 letters).",
                    "کد رهگیری به شکل RR123456789IR است (۲ حرف، ۹ رقم، ۲ حرف).",
                ),
                max_length=20,
                placeholder="RR123456789IR",
            ),
        ),
        steps=(
            Step("connect", Text("Connecting to the post office", "اتصال به اداره پست")),
            Step("history", Text("Reading the parcel's journey", "خواندن مسیر مرسوله")),
            Step("locate", Text("Finding where it is now", "یافتن جای فعلی")),
        ),
        estimated_duration=25,
        priority="default",
        bot_timeout=90,
        may_ask_otp=False,
        concurrency=5,
        heartbeat_window=45,
    ),
)

_BY_SLUG = {s.slug: s for s in SERVICES}


def get_service(slug: str) -> Service:
    try:
        return _BY_SLUG[slug]
    except KeyError:
        raise NotFound(f"No service called {slug[:64]!r}.", code="unknown_service") from None


def find_service(slug: str) -> Service | None:
    return _BY_SLUG.get(slug)
