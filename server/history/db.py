"""PostgreSQL: the connection pool and the schema migrations, for the web and the archiver.

Migrations are the numbered files in ``server/history/migrations`` (``001_history.sql``,
…), applied in order at start-up by whichever process gets there first: each
process takes a PostgreSQL advisory lock for the schema, applies what the
version table ``longrun_migrations`` lacks (one transaction per file) and
lets go, so any number of web and archiver processes may start together.

Every connection's ``search_path`` is the configured schema
(``DATABASE_SCHEMA``), so the SQL here and in the migrations names tables
unqualified and tests can each work in a schema of their own.

PostgreSQL is optional for serving live requests: the web starts without it
(history answers 503 and ``/readyz`` says so) and keeps retrying the
migrations in the background; the archiver waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout, TooManyRequests

from server.domain.errors import ConfigError, Unavailable
from server.infra.backoff import Backoff
from server.settings import SCHEMA_NAME, Settings

log = logging.getLogger("longrun.db")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "longrun_migrations"
_MIGRATION_FILE = re.compile(r"(\d{3})_([a-z0-9_]+)\.sql")

#: what a dead or unreachable PostgreSQL raises through psycopg and its pool
DB_DOWN: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    TooManyRequests,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in version order; gaps or duplicates are a start-up error."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise ConfigError(f"migration file {path.name!r} is not named NNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise ConfigError(f"migrations must be numbered 001, 002, … without gaps; found {versions}")
    return found


def check_schema(schema: str) -> str:
    if not SCHEMA_NAME.fullmatch(schema):
        raise ConfigError(f"DATABASE_SCHEMA {schema!r} is not a plain lower-case identifier")
    return schema


def connect_kwargs(settings: Settings, *, statement_timeout: float, application: str) -> dict[str, Any]:
    """libpq options every Longrun connection uses: its schema, bounded statements and connects."""
    schema = check_schema(settings.database_schema)
    return {
        "options": f"-c search_path={schema} -c statement_timeout={int(statement_timeout * 1000)}",
        "connect_timeout": 3,
        "application_name": application,
    }


def _require_url(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set: the archive needs PostgreSQL")
    return settings.database_url


async def migrate(
    settings: Settings, *, migrations: Sequence[Migration] | None = None, lock_timeout: float = 30.0
) -> list[int]:
    """Apply the migrations this schema lacks; returns the versions applied (often none).

    Raises psycopg's ``OperationalError`` when PostgreSQL cannot be reached.
    """
    schema = check_schema(settings.database_schema)
    todo = load_migrations() if migrations is None else list(migrations)
    kwargs = connect_kwargs(settings, statement_timeout=max(60.0, lock_timeout), application="longrun-migrate")
    applied: list[int] = []
    async with await AsyncConnection.connect(_require_url(settings), autocommit=True, **kwargs) as conn:
        await conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout * 1000)}ms")))
        # Session-level lock: held across the per-file transactions, released on close too.
        await conn.execute("SELECT pg_advisory_lock(hashtext(%s))", [f"longrun:migrate:{schema}"])
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        await conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.{} (version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(schema), sql.Identifier(VERSION_TABLE))
        )
        cur = await conn.execute(
            sql.SQL("SELECT version FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(VERSION_TABLE))
        )
        done = {int(row[0]) for row in await cur.fetchall()}
        for m in todo:
            if m.version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema)))
                await conn.execute(m.sql.encode())
                await conn.execute(
                    sql.SQL("INSERT INTO {}.{} (version, name) VALUES (%s, %s)").format(
                        sql.Identifier(schema), sql.Identifier(VERSION_TABLE)
                    ),
                    [m.version, m.name],
                )
            log.info("applied migration %03d_%s to schema %s", m.version, m.name, schema)
            applied.append(m.version)
        await conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [f"longrun:migrate:{schema}"])
    return applied


async def connect(settings: Settings, *, statement_timeout: float, application: str) -> AsyncConnection[Any]:
    """One autocommit connection (the archiver's: a single writer that reconnects by itself)."""
    return await AsyncConnection.connect(
        _require_url(settings),
        autocommit=True,
        **connect_kwargs(settings, statement_timeout=statement_timeout, application=application),
    )


def make_pool(
    settings: Settings,
    *,
    max_size: int = 10,
    statement_timeout: float = 5.0,
    wait_timeout: float = 3.0,
    application: str = "longrun-web",
) -> AsyncConnectionPool:
    """A closed pool (open it with ``await pool.open()``): connections are checked before use,
    at most ``max_size`` of them, and at most 100 callers queue for one, each for ``wait_timeout``."""
    return AsyncConnectionPool(
        _require_url(settings),
        kwargs=connect_kwargs(settings, statement_timeout=statement_timeout, application=application),
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=wait_timeout,
        max_waiting=100,
        check=AsyncConnectionPool.check_connection,
        # The pool's reconnect backoff doubles without a cap; giving up after 30 s lets the next
        # caller start a fresh attempt, so the web recovers promptly after a long outage.
        reconnect_timeout=30,
        name=application,
    )


@dataclass
class Database:
    """The web's handle on PostgreSQL: the pool, and whether the schema is ready."""

    pool: AsyncConnectionPool
    settings: Settings
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection; PostgreSQL being down (or not migrated yet) becomes a 503."""
        if not self.ready.is_set():
            raise Unavailable("History is not available right now. Please try again in a moment.")
        try:
            async with self.pool.connection() as conn:
                yield conn
        except DB_DOWN as exc:
            log.warning("postgresql unavailable: %s", exc.__class__.__name__)
            raise Unavailable("History is not available right now. Please try again in a moment.") from exc

    async def ping(self, timeout: float = 1.0) -> None:
        """Raise unless PostgreSQL answers within ``timeout`` and the schema is migrated."""
        if not self.ready.is_set():
            raise RuntimeError("schema not migrated yet")
        async with asyncio.timeout(timeout), self.pool.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")

    async def keep_migrating(self, first_delay: float = 1.0, max_delay: float = 30.0) -> None:
        """Apply the migrations, retrying with backoff while PostgreSQL is unreachable."""
        backoff = Backoff(first_delay, max_delay)
        while True:
            try:
                await migrate(self.settings)
            except DB_DOWN as exc:
                log.warning("postgresql not reachable for migrations (%s); retrying in %.0f s", exc, backoff.delay)
                await asyncio.sleep(next(backoff))
                continue
            except (psycopg.Error, ConfigError):
                log.exception("migrations failed; history stays unavailable until this is fixed")
                return
            self.ready.set()
            return
