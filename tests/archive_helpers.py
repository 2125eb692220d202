"""Helpers for the archive tests: terminal records made through the real Lua scripts, reading
the history table, and a TCP proxy a test can cut to take PostgreSQL away from the archiver
(without touching the machine's PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from redis.asyncio import Redis

from server.domain.catalog import get_service
from server.domain.protocol import OtpPrompt
from server.history.db import connect
from server.history.rows import ArchiveRow
from server.history.writer import write_rows
from server.record import Keys, RecordStore, new_record, token_digest
from server.requests.lifecycle import Lifecycle
from server.settings import Settings

Outcome = Literal["completed", "failed", "cancelled"]

STEPS = {
    "vehicle-fines": ("login", "search", "fetch", "summarize"),
    "credit-score-rating": ("login", "captcha", "otp", "report"),
    "video-generation": ("queued", "storyboard", "render", "encode"),
}


def tools(redis: Redis, settings: Settings) -> tuple[RecordStore, Lifecycle]:
    store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl)
    return store, Lifecycle(store)


async def make_terminal(
    store: RecordStore,
    life: Lifecycle,
    *,
    user: str = "u_test",
    service: str = "vehicle-fines",
    outcome: Outcome = "completed",
    step_pause: float = 0.0,
    otp_wait: float = 0.0,
    result: dict[str, Any] | None = None,
    start: bool = True,
) -> str:
    """One request driven to ``outcome`` through the real update script; returns its hash.

    ``start=False`` ends it while still pending (never started). ``otp_wait`` seconds are
    spent in waiting_otp on the way.
    """
    svc = get_service(service)
    steps = STEPS[service]
    h = store.keys.new_hash()
    record = new_record(
        request_hash=h,
        service_slug=service,
        request_data={"national_id": "0012345678"},
        user_id=user,
        token_hash=token_digest("not-a-real-token"),
        estimated_duration=svc.estimated_duration,
        priority=svc.priority,
        first_step=steps[0],
    )
    assert await store.create(record) is not None
    if start:
        assert (await life.start(h, svc)).applied
        for i, step in enumerate(steps[1:], start=1):
            if step_pause:
                await asyncio.sleep(step_pause)
            await life.progress(h, 20 * i, step)
            if otp_wait and step == "otp":
                await life.ask_otp(h, OtpPrompt(length=6, destination_hint="+98 912 *** **67", expires_in=120), svc)
                await asyncio.sleep(otp_wait)
                await life.progress(h, 20 * i + 5, step)
        if step_pause:
            await asyncio.sleep(step_pause)
    if outcome == "completed":
        done = await life.complete(h, result if result is not None else {"total": 3, "fines": []})
    elif outcome == "failed":
        done = await life.fail(h, "The portal said no.")
    else:
        done = await life.cancel(h)
    assert done.applied, done
    return h


def row(
    user: str, finished: float, *, service: str = "vehicle-fines", status: str = "completed", **kw: Any
) -> ArchiveRow:
    """A history row for ``user`` finished at ``finished`` (epoch seconds); ``kw`` overrides fields."""
    values: dict[str, Any] = {
        "user_id": user,
        "hash": "req_" + secrets.token_urlsafe(16),
        "service_slug": service,
        "status": status,
        "created": finished - 10,
        "started": finished - 8,
        "finished": finished,
        "duration": 8.0,
        "waited": 0.0,
        "steps": {"login": 2.0, "search": 6.0},
        "attempts": 1,
        "error": None if status != "failed" else "The portal said no.",
        "request_data": {"plate": "12B345-67"},
        "result_data": {"total": 2} if status == "completed" else None,
    }
    values.update(kw)
    return ArchiveRow(**values)


async def insert(settings: Settings, rows: list[ArchiveRow]) -> None:
    conn = await connect(settings, statement_timeout=10, application="test")
    try:
        await write_rows(conn, rows)
    finally:
        await conn.close()


def rows(settings: Settings, where: str = "TRUE", params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """History rows in the test's schema (a fresh connection each time)."""
    assert settings.database_url
    with psycopg.connect(
        settings.database_url, options=f"-c search_path={settings.database_schema}", row_factory=dict_row
    ) as conn:
        return conn.execute(f"SELECT * FROM history WHERE {where} ORDER BY finished_at", params).fetchall()


async def archived_count(settings: Settings) -> int:
    assert settings.database_url
    async with await psycopg.AsyncConnection.connect(
        settings.database_url, options=f"-c search_path={settings.database_schema}"
    ) as conn:
        try:
            cur = await conn.execute("SELECT count(*) FROM history")
        except psycopg.errors.UndefinedTable:
            return 0
        row = await cur.fetchone()
        return int(row[0]) if row else 0


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that a test can cut (every connection dropped, new
    ones refused) and restore on the same port."""

    def __init__(self, database_url: str):
        info = conninfo_to_dict(database_url)
        self.info = info
        host = str(info.get("host") or "127.0.0.1")
        self.unix = host.startswith("/")
        self.host = host
        self.target_port = int(info.get("port") or 5432)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """The database URL through the proxy."""
        info = {k: v for k, v in self.info.items() if k not in ("host", "port", "hostaddr")}
        return make_conninfo(**info, host="127.0.0.1", port=self.port)

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix:
            return await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.target_port}")
        return await asyncio.open_connection(self.host, self.target_port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream()
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        """Drop every connection (RST) and refuse new ones until :meth:`restore`."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self.tasks):
            task.cancel()
        for writer in list(self.writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self.writers.clear()
        await asyncio.sleep(0)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()
