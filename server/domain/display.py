"""What the pages show for a request: pure functions from a public record to display values.

The templates use these for the first render; ``static/progress.js`` repeats the
same few rules for every later update from the strings and message templates
that :func:`script_strings` hands it, so a page rendered by the server and a page
updated by the socket read the same. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from server.domain.catalog import Service
from server.domain.i18n import ISOLATE, MESSAGES_FA, RESULT_LABELS, local_digits, ui, ui_strings
from server.domain.messages import MESSAGES
from server.domain.prompts import prompt_in
from server.domain.status import RUNNING_VALUES as RUNNING
from server.domain.status import TERMINAL_VALUES as TERMINAL
from server.domain.status import WAITING as WAITING_STATUSES
from server.domain.status import Status

#: what the code prompt, or another prompt, already says: not repeated as the message
QUIET_IN_OTP = frozenset(
    {"otp", "otp_wrong", "input_captcha", "input_choice", "input_confirm", "input_text", "input_wrong"}
)
WAITING = frozenset(s.value for s in WAITING_STATUSES)
#: a choice of at most this many options is a row of buttons, else a select
CHOICE_BUTTONS = 6
_PERSIAN_LETTERS = re.compile(r"[\u0600-\u06FF]")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?")


def local_messages(lang: str) -> dict[str, str]:
    """The record's message templates (``message_key``) in ``lang``."""
    if lang == "fa":
        return {k: MESSAGES_FA.get(k, v) for k, v in MESSAGES.items()}
    return dict(MESSAGES)


def _fill(template: str, params: Mapping[str, Any], lang: str, *, isolate: bool) -> str:
    def value(v: Any) -> str:
        text = local_digits(v, lang) if isinstance(v, int) and not isinstance(v, bool) else str(v)
        return ISOLATE[0] + text + ISOLATE[1] if isolate else text

    try:
        return template.format(**{k: value(v) for k, v in params.items()})
    except (KeyError, IndexError, ValueError):
        return template


def _params(record: Mapping[str, Any]) -> Mapping[str, Any]:
    raw = record.get("message_params")
    return raw if isinstance(raw, Mapping) else {}


def message_key(record: Mapping[str, Any]) -> str | None:
    """Which of our messages ``current_message`` is, if it is one.

    ``message_key`` is trusted only while ``current_message`` still says what the key
    says: some changes (checking a code, resending) rewrite the text in Redis
    without touching the key, and a bot's own words have no key at all.
    """
    current = record.get("current_message")
    key = record.get("message_key")
    english = MESSAGES.get(key) if isinstance(key, str) else None
    if english is not None and _fill(english, _params(record), "en", isolate=False) == current:
        return str(key)
    for k, english in MESSAGES.items():
        if english == current and "{" not in english:
            return k
    return None


def _pattern(template: str) -> re.Pattern[str]:
    """``template`` as a regex whose groups are its ``{name}`` placeholders."""
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(f"(?P<{p}>.+)" if i % 2 else re.escape(p) for i, p in enumerate(parts)), re.DOTALL)


_ERROR_PATTERNS = [(k, _pattern(english)) for k, english in MESSAGES.items() if "{" in english]


def error_key(error: str) -> tuple[str, dict[str, str]] | None:
    """Which of our messages an ``error`` is (key and filled-in values); None for a bot's own words."""
    for k, english in MESSAGES.items():
        if english == error and "{" not in english:
            return k, {}
    for k, pattern in _ERROR_PATTERNS:
        found = pattern.fullmatch(error)
        if found is not None:
            return k, found.groupdict()
    return None


def error_text(error: str, lang: str) -> str:
    """An error in our own words (one of the messages) in the reader's language; a bot's as it is."""
    named = error_key(error)
    if named is None:
        return error
    key, params = named
    return _fill(local_messages(lang)[key], params, lang, isolate=lang == "fa")


def message_text(record: Mapping[str, Any], lang: str, service: Service | None = None) -> str:
    """The record's current message in ``lang``.

    A bot's own words are shown as they are, except that a Persian reader gets the
    current step's Persian label instead of a bot's English.
    """
    key = message_key(record)
    if key is not None:
        return _fill(local_messages(lang)[key], _params(record), lang, isolate=lang == "fa")
    current = record.get("current_message")
    current = current if isinstance(current, str) else ""
    if lang == "fa" and current and not _PERSIAN_LETTERS.search(current):
        step = record.get("step")
        names = {s.name for s in service.steps} if service is not None else set()
        return service.step_label(step, lang) + "…" if service is not None and step in names else ""
    return current


def clock(seconds: float, lang: str) -> str:
    """``m:ss``, in the reader's digits."""
    s = max(0, round(seconds))
    return local_digits(f"{s // 60}:{s % 60:02d}", lang)


def about(seconds: float, lang: str) -> str:
    """A rough duration: "20 s", "2 min"."""
    s = max(1, round(seconds))
    if s < 60:
        return ui("seconds", lang, n=s)
    return ui("minutes", lang, n=round(s / 60))


def percent(value: int, lang: str) -> str:
    return local_digits(value, lang) + ("٪" if lang == "fa" else "%")


def progress_of(record: Mapping[str, Any]) -> int:
    raw = record.get("progress")
    try:
        value = int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        value = 0
    if record.get("status") == Status.COMPLETED.value:
        value = 100
    return max(0, min(100, value))


def status_of(record: Mapping[str, Any]) -> str:
    status = record.get("status")
    return status if status in {s.value for s in Status} else Status.PROCESSING.value


def steps_view(record: Mapping[str, Any], service: Service | None, lang: str) -> list[dict[str, str]]:
    """The service's steps with their state (done, current, failed, todo) and when each began."""
    if service is None:
        return []
    status = status_of(record)
    names = [s.name for s in service.steps]
    current = record.get("step")
    index = names.index(current) if isinstance(current, str) and current in names else -1
    offsets = record.get("steps") if isinstance(record.get("steps"), Mapping) else {}
    out = []
    for i, step in enumerate(service.steps):
        if status == Status.COMPLETED.value:
            state = "done"
        elif status == Status.PENDING.value or index < 0 or i > index:
            state = "todo"
        elif i < index:
            state = "done"
        elif status == Status.FAILED.value:
            state = "failed"
        elif status == Status.CANCELLED.value:
            state = "stopped"
        else:
            state = "current"
        at = offsets.get(step.name) if isinstance(offsets, Mapping) else None
        when = clock(float(at), lang) if isinstance(at, int | float) and state != "todo" else ""
        out.append({"name": step.name, "label": step.label(lang), "state": state, "at": when})
    return out


def otp_view(record: Mapping[str, Any], lang: str) -> dict[str, Any] | None:
    """The code prompt while the bot waits for one; None otherwise."""
    if status_of(record) != Status.WAITING_OTP.value:
        return None
    raw = record.get("otp_data")
    od: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    length = od.get("length")
    length = length if isinstance(length, int) and 4 <= length <= 10 else 6
    left = od.get("attempts_left")
    attempts = ""
    if isinstance(left, int) and not isinstance(left, bool):
        attempts = ui("attempts_one", lang) if left == 1 else ui("attempts_other", lang, n=left)
    wrong = bool(od.get("error")) or record.get("message_key") == "otp_wrong"
    error = ""
    if wrong:
        detail = od.get("error")
        error = detail if lang == "en" and isinstance(detail, str) and detail else ui("otp_wrong", lang)
    hint = od.get("destination_hint")
    return {
        "length": length,
        "pattern": f"[0-9۰-۹]{{{length}}}",
        "destination": hint if isinstance(hint, str) else "",
        "attempts": attempts,
        "error": error,
        "resend_at": od.get("resend_available_at") or "",
    }


def input_view(record: Mapping[str, Any], lang: str) -> dict[str, Any] | None:
    """The prompt other than the code while the bot waits for its answer; None otherwise.
    The bot's own label is shown to readers of its language (English, or any with Persian
    letters); the title per kind says what to do in every language."""
    if status_of(record) != Status.WAITING_INPUT.value:
        return None
    prompt = prompt_in(record)
    if prompt is None or prompt.kind == "code":
        return None
    # A choice or a yes/no is not guessed at: its tries are not worth a line.
    left = prompt.attempts_left if prompt.kind in ("captcha", "text") else None
    attempts = ""
    if left is not None:
        attempts = ui("attempts_one", lang) if left == 1 else ui("attempts_other", lang, n=left)
    error = ""
    if prompt.error or record.get("message_key") == "input_wrong":
        error = prompt.error if lang == "en" and prompt.error else ui("input_wrong", lang)
    # The bot's question as it asked it, in any language: a Persian reader who cannot read it
    # still sees its numbers, and one who can knows what a yes or a choice agrees to (the
    # options are the bot's words too). The page shows it left to right when it is English.
    label = prompt.label
    return {
        "id": prompt.id,
        "kind": prompt.kind,
        "title": ui(f"input_title_{prompt.kind}", lang),
        "label": label,
        "image": prompt.image or "",
        "alt": ui("captcha_alt", lang, n=prompt.length or "") if prompt.kind == "captcha" else "",
        "length": prompt.length or 32,
        "options": [{"value": o.value, "label": o.label} for o in prompt.options],
        "select": len(prompt.options) > CHOICE_BUTTONS,
        "max_length": prompt.max_length or 0,
        "pattern": prompt.pattern or "",
        "secret": prompt.secret,
        "attempts": attempts,
        "error": error,
    }


def progress_view(record: Mapping[str, Any], service: Service | None, lang: str) -> dict[str, Any]:
    """Everything the progress page shows for ``record``."""
    status = status_of(record)
    progress = progress_of(record)
    eta = record.get("estimated_remaining_time")
    eta_text = ""
    if status == Status.WAITING_OTP.value:
        eta_text = ui("paused", lang)
    elif status == Status.WAITING_INPUT.value:
        eta_text = ui("paused_input", lang)
    elif status in RUNNING or status == Status.PENDING.value:
        eta_text = clock(float(eta), lang) if isinstance(eta, int | float) and eta > 0 else ui("almost_done", lang)
    error = record.get("error")
    if isinstance(error, str) and error:
        error = error_text(error, lang)
    # The headline or the code prompt already says these.
    quiet = status in TERMINAL or (status in WAITING and message_key(record) in QUIET_IN_OTP)
    return {
        "status": status,
        "terminal": status in TERMINAL,
        "progress": progress,
        "percent": percent(progress, lang),
        "headline": ui(f"status_{status}", lang),
        "message": message_text(record, lang, service),
        "show_message": not quiet,
        "steps": steps_view(record, service, lang),
        "eta": eta_text,
        "otp": otp_view(record, lang),
        "input": input_view(record, lang),
        "error": error if isinstance(error, str) else "",
    }


# --------------------------------------------------------------------------- results


def label_for(key: str, lang: str) -> str:
    text = RESULT_LABELS.get(key)
    return text(lang) if text is not None else key.replace("_", " ").strip().capitalize()


def _scalar(value: Any, lang: str) -> str:
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, int):
        text = f"{value:,}"
        return local_digits(text.replace(",", "٬"), lang) if lang == "fa" else text
    if isinstance(value, float):
        return local_digits(f"{value:,.2f}".rstrip("0").rstrip("."), lang)
    if isinstance(value, str) and _ISO.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        zone = " UTC" if moment.utcoffset() is not None else ""
        return local_digits(moment.strftime("%Y-%m-%d %H:%M") + zone, lang)
    return "" if value is None else str(value)


def _link(value: Any) -> str | None:
    # Bots write result_data: only plain web links become links (never javascript: and the like).
    if isinstance(value, str) and re.fullmatch(r"https?://[^\s\"'<>]{1,2000}", value):
        return value
    return None


def result_rows(result: Any, lang: str) -> list[dict[str, Any]]:
    """``result_data`` as rows to show: text, a link, a table (a list of objects) or a list."""
    if not isinstance(result, Mapping):
        return []
    rows: list[dict[str, Any]] = []
    # Known fields in a stable, sensible order (records pass through Lua, which loses key order).
    order = {k: i for i, k in enumerate(RESULT_LABELS)}
    items = sorted(list(result.items())[:50], key=lambda kv: order.get(str(kv[0]), len(order)))
    for key, value in items:
        row: dict[str, Any] = {"label": label_for(str(key), lang)}
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            columns = list(dict.fromkeys(str(k) for v in value for k in v))[:8]
            row["kind"] = "table"
            row["columns"] = [label_for(c, lang) for c in columns]
            row["rows"] = [[_scalar(v.get(c), lang) for c in columns] for v in value[:100]]
        elif isinstance(value, list):
            row["kind"] = "list" if value else "none"
            row["items"] = [_scalar(v, lang) for v in value[:100]]
        elif isinstance(value, Mapping):
            row["kind"] = "list"
            row["items"] = [f"{label_for(str(k), lang)}: {_scalar(v, lang)}" for k, v in list(value.items())[:50]]
        elif _link(value):
            row["kind"] = "link"
            row["href"] = value
            row["value"] = value
        else:
            row["kind"] = "text"
            row["value"] = _scalar(value, lang)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the page's script


def script_strings(lang: str) -> dict[str, Any]:
    """What static/progress.js needs to say things: page strings and the record's message templates."""
    return {
        "ui": ui_strings(lang),
        "messages": {
            k: [english, local]
            for (k, english), local in zip(MESSAGES.items(), local_messages(lang).values(), strict=True)
        },
    }
