"""Messages in English and Persian, chosen by ``Accept-Language`` or the page's switch.

The bots' real users read Persian; every string a person sees comes from here
(API error texts stay English, with a ``code`` a page can translate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

LANGS = ("en", "fa")
DEFAULT_LANG = "en"
RTL = frozenset({"fa"})

_PERSIAN_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")


def ascii_digits(text: str) -> str:
    """Persian and Arabic-Indic digits to ASCII: people type national ids on Persian keyboards."""
    return text.translate(_PERSIAN_DIGITS)


@dataclass(frozen=True)
class Text:
    """A string in every supported language."""

    en: str
    fa: str

    def __call__(self, lang: str) -> str:
        return self.fa if lang == "fa" else self.en


def pick_lang(accept_language: str | None, override: str | None = None) -> str:
    """The page language: an explicit choice, else the best match in Accept-Language."""
    if override in LANGS:
        return override
    if not accept_language:
        return DEFAULT_LANG
    best, best_q = DEFAULT_LANG, -1.0
    for part in accept_language.split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if lang in LANGS and q > best_q:
            best, best_q = lang, q
    return best


FIELD_ERRORS: Mapping[str, Text] = {
    "required": Text("This field is required.", "این فیلد الزامی است."),
    "type": Text("Enter text here.", "اینجا متن وارد کنید."),
    "number": Text("Enter a number.", "یک عدد وارد کنید."),
    "min_value": Text("Must be at least {min}.", "باید دست‌کم {min} باشد."),
    "max_value": Text("Must be at most {max}.", "باید حداکثر {max} باشد."),
    "min_length": Text("Must be at least {min} characters.", "باید دست‌کم {min} نویسه باشد."),
    "max_length": Text("Must be at most {max} characters.", "باید حداکثر {max} نویسه باشد."),
    "pattern": Text("{hint}", "{hint_fa}"),
    "choice": Text("Choose one of the options.", "یکی از گزینه‌ها را انتخاب کنید."),
    "unknown": Text("This field is not part of the form.", "این فیلد جزو فرم نیست."),
}


def field_error(code: str, lang: str = DEFAULT_LANG, **params: object) -> str:
    template = FIELD_ERRORS[code](lang)
    return template.format(**params)
