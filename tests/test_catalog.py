"""The service catalog's validation."""

from __future__ import annotations

import jsonschema_rs
import pytest

from server.domain.catalog import SERVICES, get_service
from server.domain.errors import NotFound, ValidationFailed


def test_every_service_is_complete() -> None:
    slugs = [s.slug for s in SERVICES]
    assert len(slugs) == len(set(slugs))
    for s in SERVICES:
        assert s.fields and s.steps and s.estimated_duration > 0 and s.concurrency >= 1
        assert s.limits().job_timeout > s.limits().deadline == s.bot_timeout
        assert s.limits(0.1).deadline == s.bot_timeout * 0.1
        assert s.priority in ("high", "default", "low")


def test_unknown_service() -> None:
    with pytest.raises(NotFound):
        get_service("nope")


def test_validation_cleans_and_reports_per_field() -> None:
    credit = get_service("credit-score-rating")
    assert credit.validate({"national_id": " ۰۰۱۲۳۴۵۶۷۸ ", "mobile": "0912-123-4567"}) == {
        "national_id": "0012345678",
        "mobile": "09121234567",
    }
    with pytest.raises(ValidationFailed) as err:
        credit.validate({"national_id": 12, "mobile": "1234", "x": "y"}, "fa")
    assert set(err.value.fields) == {"national_id", "mobile", "x"}
    assert err.value.fields["mobile"].startswith("به شکل")


def test_numbers() -> None:
    video = get_service("video-generation")
    assert video.validate({"prompt": "boat", "duration_seconds": "۱۵"}) == {"prompt": "boat", "duration_seconds": 15}
    for bad in (True, "nan", "inf", 4, 61, [], "abc"):
        with pytest.raises(ValidationFailed):
            video.validate({"prompt": "boat", "duration_seconds": bad})
    with pytest.raises(ValidationFailed):
        video.validate("not an object")
    # the bounds a Persian reader is told are in Persian digits
    with pytest.raises(ValidationFailed) as refused:
        video.validate({"prompt": "boat", "duration_seconds": 61}, "fa")
    assert refused.value.fields["duration_seconds"] == "باید حداکثر ۶۰ باشد."


# What a person may type, around and inside each kind of field: every blank that one notion of
# "whitespace" or another knows (\x1c and \x85 Python's, \ufeff ECMA-262's), digits typed on a
# Persian keyboard, separators, lengths at the limits. The first is what the fuzz run found.
TYPED = (
    "\x853\U000bc109 \f",
    "boat",
    " a paper boat ",
    "ab",
    "\u2003ab\u2003",
    "\x1cab\x1c",
    "\ufeffab\ufeff",
    "a" * 500,
    " " + "a" * 499,
    "a" * 501,
    "0012345678",
    " ۰۰۱۲۳۴۵۶۷۸ ",
    "٠٠١٢٣٤٥٦٧٨",
    "001-234-5678",
    "- 0012345678 -",
    "\t0012345678\u3000",
    "\x1c0012345678",
    "\ufeff0012345678",
    "00123\t45678",
    "001234567",
    "09121234567",
    "0912-123-4567",
    "۰۹۱۲ ۱۲۳ ۴۵۶۷",
    "09121234567\x85",
    "19121234567",
    "12B345-67",
    " 12ب345-67 ",
    "12B34567",
    "12B345--67",
    "",
    "   ",
    "\x85",
)


def test_each_field_schema_admits_exactly_what_the_field_accepts() -> None:
    """The OpenAPI document is built from these schemas: the fuzz run's negative cases must be
    refused and its positive ones accepted, so a schema that is looser or stricter than
    :meth:`Field.clean` is a document that lies."""
    for service in SERVICES:
        for f in service.fields:
            if f.type == "number":
                continue
            schema = jsonschema_rs.validator_for(f.json_schema())
            for typed in TYPED:
                _, error = f.clean(typed)
                assert schema.is_valid(typed) == (error is None), (f.name, typed, error)


def test_schema_and_field_agree_on_every_character_around_a_value() -> None:
    prompt = next(f for s in SERVICES for f in s.fields if f.name == "prompt")
    schema = jsonschema_rs.validator_for(prompt.json_schema())
    for c in map(chr, range(0x10000)):
        if 0xD800 <= ord(c) <= 0xDFFF:
            continue  # lone surrogates: not text JSON can carry
        typed = f"{c}ab{c}"  # three characters at least: valid only if c is not a blank
        assert schema.is_valid(typed) == (prompt.clean(typed)[1] is None), hex(ord(c))
