"""Shared fixtures: a real Redis, a real demo bot API over HTTP, real RQ workers.

Every test gets its own key prefix (``t<hex>_``): its records, queues, RQ
jobs and rate limits all carry it, and the test deletes exactly those keys
when it ends. Nothing here flushes a database.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from psycopg import sql
from redis.asyncio import Redis

from bots.demo import create_bot_app
from server.devtools.embedded import LOCAL_POSTGRES, EmbeddedPostgres, EmbeddedRedis, postgres_answers, redis_answers
from server.devtools.processes import Processes, delete_prefixed
from server.record import Keys, RecordStore
from server.settings import Settings, new_webhook_secret
from server.web.app import create_app

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


# --------------------------------------------------------------------------- services


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis when it answers, else an embedded one for the session."""
    url = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/0"
    if redis_answers(url):
        yield url
        return
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    embedded.start()
    yield embedded.url
    embedded.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}_"


@pytest.fixture
async def redis(redis_url: str, prefix: str) -> AsyncIterator[Redis]:
    """A client for assertions; at the end, deletes every key carrying this test's prefix."""
    client = Redis.from_url(redis_url)
    yield client
    await delete_prefixed(client, prefix)
    await client.aclose()


@pytest.fixture
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def store(redis: Redis, keys: Keys) -> RecordStore:
    """A record store on this test's prefix (records live 600 s)."""
    return RecordStore(redis, keys, ttl=600)


@pytest.fixture
def base_settings(redis_url: str, prefix: str, redis: Redis) -> Settings:
    # ``redis``: whatever the test does with this prefix (its app, workers, records) is
    # deleted at its end, also when it never asks for the client itself.
    return Settings(
        secret_key=secrets.token_urlsafe(32),
        webhook_secrets=(new_webhook_secret(),),
        redis_url=redis_url,
        key_prefix=prefix,
        bot_speed=float(os.environ.get("TEST_BOT_SPEED", "60")),
        retry_intervals=(1, 1, 1),
        job_heartbeat_interval=1,
        maintenance_interval=1,
        otp_resend_interval=2,
        demo_mode=True,
        log_level="INFO",
        # Every service at the test's own bot API (never the machine's port 9998, where a
        # `make run` may have its Node demo bot); tests of the Node bot route it themselves.
        bot_api_urls={},
    )


@pytest.fixture
async def bot_server(aiohttp_server: Any, base_settings: Settings, redis: Redis) -> TestServer:
    """The demo bot API, over real HTTP on a loopback port, reporting into this test's records."""
    server: TestServer = await aiohttp_server(create_bot_app(base_settings))
    return server


@pytest.fixture
def settings(base_settings: Settings, bot_server: TestServer) -> Settings:
    return base_settings.with_(bot_api_url=str(bot_server.make_url("")).rstrip("/"))


@pytest.fixture
def aiohttp_client(redis: Redis, aiohttp_client: Any) -> Any:
    """pytest-aiohttp's, set up after the cleaning ``redis`` fixture whatever a test's order of
    arguments: its apps stop (the poll limiter's last charges written) before the test's keys
    are deleted."""
    return aiohttp_client


@pytest.fixture
async def make_client(aiohttp_client: Any) -> Callable[[Settings], Any]:
    async def make(s: Settings) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(s))
        return client

    return make


@pytest.fixture
async def client(
    make_client: Callable[[Settings], Any], settings: Settings
) -> TestClient[web.Request, web.Application]:
    """The Longrun web app, in this process, on a loopback port."""
    c: TestClient[web.Request, web.Application] = await make_client(settings)
    return c


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's PostgreSQL (database ``test``) when it answers, else an embedded one."""
    url = os.environ.get("TEST_DATABASE_URL") or LOCAL_POSTGRES
    if postgres_answers(url):
        yield url
        return
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", database="test", keep=False)
    yield embedded.start()
    embedded.stop()


@pytest.fixture
def pg_schema(database_url: str, prefix: str) -> Iterator[str]:
    """This test's own schema, named after its key prefix; dropped (with all it holds) at the end."""
    schema = prefix.rstrip("_").lower()
    yield schema
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '20s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_settings(base_settings: Settings, database_url: str, pg_schema: str) -> Settings:
    """Settings with the archive on, in this test's schema (no bot API: see ``pg_full_settings``)."""
    return base_settings.with_(database_url=database_url, database_schema=pg_schema)


@pytest.fixture
def pg_full_settings(settings: Settings, database_url: str, pg_schema: str) -> Settings:
    """``settings`` (demo bots up) with the archive on, in this test's schema."""
    return settings.with_(database_url=database_url, database_schema=pg_schema)


# --------------------------------------------------------------------------- processes


@pytest.fixture
def processes(redis: Redis, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Processes]:
    # ``redis`` first: the processes stop before the test's keys are deleted (a worker or cron
    # still running then wrote its queues and jobs back).
    procs = Processes(tmp_path)
    yield procs
    killed = procs.stop_all()
    if killed:
        print(f"had to SIGKILL: {killed}")
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print("---- child process logs ----\n" + procs.logs(tail=20000))


@pytest.fixture
def workers(processes: Processes, settings: Settings) -> subprocess.Popen[bytes]:
    """One pool of real RQ workers (2 processes) on this test's queues."""
    return processes.workers(settings, count=2)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The load tests (marked ``slow``) run first and one after another.

    pytest-xdist's work-stealing scheduler hands each worker a contiguous run of the
    collection and steals from its tail, so the tests at the head of the collection run in
    order on the first worker from the start. That keeps the heaviest load tests from
    running at the same time as each other and from landing together at the end of the
    run, when they would set the wall time (and, on a slow machine, starve each other)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
