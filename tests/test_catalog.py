"""The service catalog's validation."""

from __future__ import annotations

import pytest

from server.catalog import SERVICES, get_service
from server.errors import NotFound, ValidationFailed


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
