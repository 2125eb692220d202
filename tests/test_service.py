"""The request service called directly, with no HTTP at all: a :class:`Caller` is all it
needs to create a request, hand it a code, cancel it, and refuse someone else's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from server.domain.catalog import get_service
from server.domain.errors import Conflict, NotFound, RateLimited
from server.domain.protocol import OtpPrompt
from server.infra import connections
from server.queue.dispatch import Dispatcher
from server.record import Keys, RecordStore, token_digest
from server.requests.caller import Caller
from server.requests.lifecycle import Lifecycle
from server.requests.limits import RateLimits
from server.requests.service import RequestService
from server.settings import Settings

CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


@pytest.fixture
async def service(base_settings: Settings, redis: Redis) -> AsyncIterator[RequestService]:
    """The service as the composition root builds it, from a real Redis and a real RQ queue."""
    settings = base_settings
    client = connections.async_client(settings)
    store = RecordStore(client, Keys(settings.key_prefix), ttl=settings.request_ttl)
    connection = connections.rq_connection(settings)
    dispatcher = Dispatcher(connection, settings)
    lifecycle = Lifecycle.for_settings(store, settings, dispatcher)
    limits = RateLimits.for_settings(store, settings)
    yield RequestService(store, lifecycle, dispatcher, settings, limits)
    await limits.stop()
    connection.close()
    await client.aclose()


async def test_an_http_free_caller_creates_submits_a_code_and_cancels(service: RequestService) -> None:
    alice = Caller(address="10.0.0.1", user_id="u_alice")
    created, token = await service.create(alice, service.draft("credit-score-rating", CREDIT))
    h = created["hash"]
    assert created["status"] == "pending" and created["user_id"] == "u_alice" and token

    # The bot starts and asks for a code; Alice types it.
    credit = get_service("credit-score-rating")
    await service.lifecycle.start(h, credit)
    await service.lifecycle.ask_otp(h, OtpPrompt(length=6, destination_hint="+98 912 *** **67"), credit)
    assert (await service.visible(alice, h))["status"] == "waiting_otp"
    checking = await service.submit_otp(alice, h, "123456")
    assert checking["status"] == "processing"
    with pytest.raises(Conflict) as busy:
        await service.submit_otp(alice, h, "654321")
    assert busy.value.code == "otp_pending"

    # A holder of the token sees it too (judged by the token alone); Alice cancels it.
    holder = Caller(address="10.0.0.2", token_digest=token_digest(token))
    assert (await service.visible(holder, h))["hash"] == h
    cancelled = await service.cancel(alice, h)
    assert cancelled["status"] == "cancelled"
    with pytest.raises(Conflict) as finished:
        await service.cancel(alice, h)
    assert finished.value.code == "already_finished"


async def test_another_persons_request_is_refused_like_one_that_never_existed(service: RequestService) -> None:
    alice = Caller(address="10.0.0.1", user_id="u_alice")
    created, _ = await service.create(alice, service.draft("credit-score-rating", CREDIT))
    h = created["hash"]
    strangers = [
        Caller(address="10.0.0.3", user_id="u_mallory"),
        Caller(address="10.0.0.3"),
        Caller(address="10.0.0.3", user_id="u_alice", token_digest=token_digest("a guessed token")),
        Caller(address="10.0.0.3", grants=frozenset({"req_someone_else_entirely_000"})),
    ]
    actions: list[Any] = [
        lambda c: service.visible(c, h),
        lambda c: service.submit_otp(c, h, "123456"),
        lambda c: service.resend_otp(c, h),
        lambda c: service.cancel(c, h),
    ]
    for stranger in strangers:
        for act in actions:
            with pytest.raises(NotFound):
                await act(stranger)
    # A session that opened the token link may see it.
    assert (await service.visible(Caller(address="10.0.0.3", grants=frozenset({h})), h))["hash"] == h
    assert (await service.visible(alice, h))["status"] == "pending"


async def test_creating_is_limited_per_user(service: RequestService, base_settings: Settings) -> None:
    burst, _ = base_settings.create_rate
    bob = Caller(address="10.0.0.4", user_id="u_bob")
    for _ in range(burst):
        await service.create(bob, service.draft("credit-score-rating", CREDIT))
    with pytest.raises(RateLimited) as refused:
        await service.create(bob, service.draft("credit-score-rating", CREDIT))
    assert refused.value.retry_after > 0
