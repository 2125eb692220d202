"""The messages of a request, keyed: the English text and how a patch carries it.

A record carries ``message_key`` (and ``message_params``) next to the English
``current_message`` so that pages show the message in the reader's language
(the Persian texts are in :mod:`server.domain.i18n`). A failure's ``error`` is one
of these texts too (or a bot's own words): pages find its key by the text
(:func:`server.domain.display.error_text`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MESSAGES: Mapping[str, str] = {
    "queued": "Waiting for a free worker…",
    "starting": "Connecting to the service…",
    "retrying": "The service is not answering; trying again (attempt {attempt} of {max}).",
    "working": "The service is working on it…",
    "otp": "Enter the code we sent to {destination}.",
    "otp_wrong": "That code was not accepted. Check it and try again.",
    "checking": "Checking the code…",
    "resending": "Sending a new code…",
    "otp_exhausted": "Too many wrong codes. Please start a new request.",
    # The other prompts (server.domain.prompts), one line per kind:
    "input_captcha": "Type the characters you see in the picture.",
    "input_choice": "Choose one to go on.",
    "input_confirm": "Confirm to go on.",
    "input_text": "Answer the question to go on.",
    "input_wrong": "That answer was not accepted. Check it and try again.",
    "checking_input": "Checking your answer…",
    "input_exhausted": "Too many wrong answers. Please start a new request.",
    "done": "Done.",
    "failed": "The request failed.",
    "cancelled": "Cancelled.",
    # Why a request failed (the record's ``error``; pages map the text back to its key).
    # The sweeper's reasons:
    "silent": "The service stopped responding. Please try again.",
    "overdue": "The service did not finish in time. Please try again later.",
    "otp_expired": "The code was not entered in time. Please start a new request.",
    "input_expired": "The question was not answered in time. Please start a new request.",
    "never_started": "No worker could take the request for hours. Please try again.",
    "queue_failed": "The request could not be queued. Please try again.",
    # The workers' reasons:
    "service_gone": "This service is no longer offered.",
    "bad_answer": "The service sent an answer we could not understand.",
    "otp_check_unreachable": "We could not reach the service to check your code. Please start again.",
    "otp_check_failed": "The service could not check the code: {error}",
    "input_check_unreachable": "We could not reach the service to check your answer. Please start again.",
    "input_check_failed": "The service could not check the answer: {error}",
    "bot_unavailable": "The service is not available right now. Please try again in a few minutes.",
    "bot_gave_up": "The service could not finish the request. Please try again later.",
    "bot_gave_up_because": "The service could not finish the request: {error}",
    "worker_lost": "The worker running your request stopped unexpectedly. Please start again.",
    "internal": "Something went wrong on our side. Please try again.",
    # Shown with the code prompt (``otp_data.error``), not as the request's outcome:
    "otp_expired_unchecked": "The code expired before we could check it. Please enter it again.",
    "resend_failed": "Could not send a new code: {error}",
    "input_expired_unchecked": "Your answer expired before we could check it. Please answer again.",
}


def text(key: str, **params: Any) -> str:
    """The English text of ``key`` (a failure reason for ``error``), filled."""
    return MESSAGES[key].format(**params)


def message(key: str, **params: Any) -> dict[str, Any]:
    """``current_message`` + ``message_key`` (+ params) for a patch."""
    out: dict[str, Any] = {"current_message": MESSAGES[key].format(**params), "message_key": key}
    out["message_params"] = params or None
    return out
