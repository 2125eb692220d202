"""Schema-driven fuzzing: Schemathesis generates requests from /api/openapi.json and checks
that the running server never answers 5xx and never answers outside its own schema."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from redis.asyncio import Redis
from schemathesis import checks

from server.openapi import document
from server.settings import Settings, new_webhook_secret
from tests.conftest import ROOT, delete_prefixed

schema = schemathesis.openapi.from_dict(document())


@pytest.fixture(scope="module")
def live_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real server process with its own key prefix, for the module's fuzzing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prefix = f"t{secrets.token_hex(4)}_"
    config = Settings(
        secret_key=secrets.token_urlsafe(32),
        webhook_secrets=(new_webhook_secret(),),
        redis_url=redis_url,
        key_prefix=prefix,
        port=port,
    )
    log = open(tmp_path_factory.mktemp("fuzz") / "web.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "server"], env={**os.environ, **config.to_env()}, cwd=ROOT, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)
    log.close()
    asyncio.run(_cleanup(redis_url, prefix))


async def _cleanup(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    await delete_prefixed(client, prefix)
    await client.aclose()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_answers_within_its_schema_and_never_5xx(case: schemathesis.Case, live_url: str) -> None:
    # Every response check runs (no 5xx, status codes, content types, headers, bodies, and
    # schema-valid input accepted). Only "schema-violating input must be refused" is off: the
    # server is deliberately lenient where people type (Persian digits, "0912-123-4567").
    # And /api/history's cursor is an opaque token: a schema cannot tell ours from noise.
    excluded = [checks.negative_data_rejection]
    if case.operation.path == "/api/history":
        excluded.append(checks.positive_data_acceptance)
    case.call_and_validate(base_url=live_url, excluded_checks=excluded)
