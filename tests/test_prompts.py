"""Prompts for the person: what a bot may ask, what counts as an answer (no I/O)."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from server.domain.errors import ProtocolError
from server.domain.prompts import MAX_IMAGE_BYTES, Prompt, prompt_in
from server.domain.protocol import (
    InputFrame,
    InputRequiredEvent,
    NeedsInput,
    parse_bot_answer,
    parse_bot_event,
    parse_client_frame,
    serialize_client_frame,
)


def png_url(size: tuple[int, int] = (40, 20)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


CAPTCHA = {"id": "captcha", "kind": "captcha", "label": "Solve it", "image": png_url(), "length": 5}
CHOICE = {
    "id": "vehicle",
    "kind": "choice",
    "options": [{"value": "12B345-67", "label": "Peugeot 206"}, {"value": "44C555-11", "label": "Pride"}],
}


@pytest.mark.parametrize(
    "raw",
    [
        CAPTCHA,
        CHOICE,
        {"id": "pay", "kind": "confirm", "label": "Pay 120,000 rials?"},
        {"id": "postcode", "kind": "text", "max_length": 10, "pattern": "[0-9]{10}", "secret": True},
        {"id": "otp", "kind": "code", "length": 5, "destination_hint": "+98 912 *** **34"},
    ],
)
def test_every_kind_round_trips(raw: dict[str, Any]) -> None:
    prompt = Prompt.parse(raw)
    assert Prompt.parse(prompt.serialize()) == prompt
    event = parse_bot_event({"type": "input_required", "input": raw})
    assert isinstance(event, InputRequiredEvent) and event.prompt == prompt
    assert parse_bot_event(event.serialize()) == event
    answer = parse_bot_answer(200, {"status": "input_required", "input": raw})
    assert isinstance(answer, NeedsInput) and answer.prompt == prompt


def test_captcha_and_code_answers_are_secret_whatever_the_bot_says() -> None:
    assert Prompt.parse({**CAPTCHA, "secret": False}).secret
    assert Prompt.parse({"kind": "code"}).secret and Prompt.parse({"kind": "code"}).id == "code"
    assert not Prompt.parse(CHOICE).secret


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"kind": "riddle"}, "kind"),
        ({**CAPTCHA, "id": "has space"}, "id"),
        ({**CAPTCHA, "image": "data:image/jpeg;base64,AAAA"}, "data:image/png"),
        ({**CAPTCHA, "image": "data:image/png;base64,R0lGODlh"}, "not a PNG"),  # a GIF's bytes
        ({**CAPTCHA, "image": "data:image/png;base64,%%%"}, "base64"),
        ({**CAPTCHA, "image": "data:image/png;base64," + "A" * (MAX_IMAGE_BYTES // 3 * 4 + 8)}, "KiB"),
        ({**CHOICE, "options": CHOICE["options"][:1]}, "2 to 20"),
        ({**CHOICE, "options": [{"value": str(i)} for i in range(21)]}, "2 to 20"),
        ({**CHOICE, "options": [CHOICE["options"][0], CHOICE["options"][0]]}, "distinct values"),
        ({"kind": "text", "pattern": "("}, "regular expression"),
        ({"kind": "text", "pattern": "(a)\\1"}, "RE2"),  # a backreference: Python's re has them
        ({"kind": "text", "pattern": "(?=[0-9])[0-9a-z]{3}"}, "lookarounds"),
        ({"kind": "text", "pattern": "((((a{1,100}){1,100}){1,100}){1,100})"}, "modest size"),
        ({"kind": "text", "max_length": 0}, "max_length"),
        ({"kind": "confirm", "expires_in": 5}, "expires_in"),
        ({"kind": "confirm", "secret": "yes"}, "secret"),
        ("captcha", "object"),
    ],
)
def test_malformed_prompts_are_refused(raw: Any, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        Prompt.parse(raw)


def test_a_png_within_the_bound_is_taken_and_one_byte_over_refused() -> None:
    big = png_url((400, 400))
    assert Prompt.parse({**CAPTCHA, "image": big}).image == big
    head = base64.b64decode(big.split(",", 1)[1])
    over = head + b"\0" * (MAX_IMAGE_BYTES + 1 - len(head))
    with pytest.raises(ProtocolError, match="KiB"):
        Prompt.parse({**CAPTCHA, "image": "data:image/png;base64," + base64.b64encode(over).decode()})


@pytest.mark.parametrize(
    ("raw", "given", "relayed"),
    [
        (CAPTCHA, " ab ۱2 ", "ab12"),
        (CHOICE, "44C555-11", "44C555-11"),
        ({"kind": "confirm"}, True, True),
        ({"kind": "confirm"}, "no", False),
        ({"kind": "text", "pattern": "[0-9]{3}"}, "۱۲۳", "123"),
        ({"kind": "code", "length": 6}, "۱۲۳ ۴۵۶", "123456"),
    ],
)
def test_answers_are_normalized_for_the_bot(raw: dict[str, Any], given: Any, relayed: Any) -> None:
    assert Prompt.parse(raw).answer(given) == relayed


@pytest.mark.parametrize(
    ("raw", "given"),
    [
        (CAPTCHA, "   "),
        (CAPTCHA, "x" * 33),
        (CHOICE, "not-an-option"),
        (CHOICE, True),
        ({"kind": "confirm"}, "maybe"),
        ({"kind": "text", "max_length": 3}, "abcd"),
        ({"kind": "text", "pattern": "[0-9]{3}"}, "12a"),
        ({"kind": "text"}, ""),
        ({"kind": "code"}, "12"),
    ],
)
def test_answers_that_cannot_be_are_refused(raw: dict[str, Any], given: Any) -> None:
    with pytest.raises(ProtocolError):
        Prompt.parse(raw).answer(given)


def test_a_pattern_that_backtracks_is_matched_in_linear_time() -> None:
    """A hand-written pattern that makes a backtracking engine take time exponential in the
    answer's length (Python's re: 4.6 s for 26 characters, tripling every 2 more, holding the
    web process) is matched by RE2 at once: this answer would take Python's re hours."""
    prompt = Prompt.parse({"kind": "text", "pattern": "([A-Za-z]+ ?)+", "max_length": 100})
    with pytest.raises(ProtocolError, match="expected form"):
        prompt.answer("a" * 40 + "!")
    assert prompt.answer("Ada Lovelace") == "Ada Lovelace"


def test_input_frames_round_trip_and_are_bounded() -> None:
    for frame in (InputFrame("vehicle", "44C555-11"), InputFrame("pay", False)):
        assert parse_client_frame(serialize_client_frame(frame)) == frame
    for bad in ('{"type":"input","value":"x"}', '{"type":"input","id":"a","value":3}'):
        with pytest.raises(ProtocolError):
            parse_client_frame(bad)
    with pytest.raises(ProtocolError, match="500"):
        parse_client_frame('{"type":"input","id":"a","value":"' + "x" * 501 + '"}')


def test_a_record_shows_its_prompt_or_none() -> None:
    assert prompt_in({"input_request": {**CHOICE, "expires_at": "2026-01-01T00:00:00Z"}}) == Prompt.parse(CHOICE)
    assert prompt_in({"input_request": None}) is None
    assert prompt_in({"input_request": {"kind": "riddle"}}) is None


def test_the_demo_captcha_is_a_small_png_a_prompt_takes() -> None:
    from bots.demo import captcha

    answer = captcha.new_answer()
    assert len(answer) == captcha.LENGTH and set(answer) <= set(captcha.ALPHABET)
    png = captcha.draw(answer)
    assert len(png) < MAX_IMAGE_BYTES // 4
    assert Image.open(io.BytesIO(png)).size == captcha.SIZE
    prompt = Prompt.parse({"id": "captcha", "kind": "captcha", "image": captcha.data_url(png)})
    assert prompt.answer(answer.lower()) == answer.lower()  # the bot compares without case


@pytest.mark.parametrize("kind", ["confirm", "text", "code"])
def test_null_for_a_number_with_a_default_means_the_default(kind: str) -> None:
    # what bots in other languages send for "none" (the Node SDK's ``??`` reads it the same)
    prompt = Prompt.parse({"kind": kind, "expires_in": None, "max_length": None, "pattern": None})
    assert prompt.expires_in == 120
    assert prompt.max_length == (100 if kind == "text" else None)
