"""Migrations, the schema they build, settings for the archive, readiness with PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from server.devtools.processes import free_port
from server.domain.errors import ConfigError
from server.history.db import Migration, check_schema, load_migrations, migrate
from server.settings import Settings
from server.web.app import create_app


def catalog(settings: Settings, query: str) -> list[tuple[Any, ...]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(query, [settings.database_schema]).fetchall()


async def test_migrations_apply_once_even_when_processes_start_together(pg_settings: Settings) -> None:
    results = await asyncio.gather(*(migrate(pg_settings) for _ in range(4)))
    assert sorted(results) == [[], [], [], [1, 2]]
    assert await migrate(pg_settings) == []
    assert pg_settings.database_url
    with psycopg.connect(pg_settings.database_url, options=f"-c search_path={pg_settings.database_schema}") as conn:
        versions = conn.execute("SELECT version, name FROM longrun_migrations").fetchall()
    assert sorted(versions) == [(1, "history"), (2, "app")]


async def test_history_is_hash_partitioned_by_user_with_its_indexes(pg_settings: Settings) -> None:
    await migrate(pg_settings)
    parts = catalog(
        pg_settings,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
        "JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = %s AND p.relname = 'history'",
    )
    assert len(parts) == 16
    assert all("modulus 16" in bound for _, bound in parts)
    (key,) = catalog(
        pg_settings,
        "SELECT pg_get_partkeydef(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = 'history'",
    )
    assert key == ("HASH (user_id)",)
    indexes = {
        name: ddl
        for name, ddl in catalog(
            pg_settings, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'history'"
        )
    }
    assert "PRIMARY KEY" not in indexes["history_pkey"] and "(user_id, hash)" in indexes["history_pkey"]
    assert "(user_id, finished_at, hash)" in indexes["history_user_finished"]
    assert "INCLUDE (status, duration)" in indexes["history_service_finished"]
    assert "USING brin (finished_at)" in indexes["history_finished"]
    assert len(indexes) == 4


async def test_migrations_stay_inside_their_schema(pg_settings: Settings, database_url: str) -> None:
    await migrate(pg_settings)
    with psycopg.connect(database_url) as conn:
        outside = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'longrun_migrations' AND schemaname = %s",
            [pg_settings.database_schema],
        ).fetchone()
    assert outside == (1,)


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "003_c.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match="without gaps"):
        load_migrations(tmp_path)
    (tmp_path / "two.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match=r"NNN_name\.sql"):
        load_migrations(tmp_path)
    assert [m.version for m in load_migrations()] == list(range(1, len(load_migrations()) + 1))


async def test_a_failing_migration_leaves_nothing_half_done(pg_settings: Settings) -> None:
    bad = [
        Migration(1, "ok", "CREATE TABLE one (x int);"),
        Migration(2, "broken", "CREATE TABLE two (x int); SELEC 1;"),
    ]
    with pytest.raises(psycopg.errors.SyntaxError):
        await migrate(pg_settings, migrations=bad)
    tables = {t for (t,) in catalog(pg_settings, "SELECT tablename FROM pg_tables WHERE schemaname = %s")}
    assert tables == {"one", "longrun_migrations"}


def test_archive_settings_are_read_and_checked() -> None:
    env = {
        "LONGRUN_ENV": "dev",
        "DATABASE_URL": "postgresql://x@h/db",
        "DATABASE_SCHEMA": "hist",
        "ARCHIVE_RETENTION_DAYS": "30",
        "ARCHIVE_RETENTION_INTERVAL": "600",
        "ARCHIVE_BATCH": "200",
        "ARCHIVE_PARSERS": "0",
    }
    s = Settings.from_env(env)
    assert (s.database_schema, s.archive_retention_days, s.archive_batch) == ("hist", 30, 200)
    assert s.archive_parsers == 0 and Settings.from_env({"LONGRUN_ENV": "dev"}).archive_parsers == 2
    assert s.archive_retention_interval == 600
    assert Settings.from_env({"LONGRUN_ENV": "dev"}).archive_retention_interval == 3600
    again = Settings.from_env({**s.to_env(), "LONGRUN_ENV": "dev"})
    assert (again.database_url, again.database_schema, again.archive_batch) == (s.database_url, "hist", 200)
    assert again.archive_retention_interval == 600
    assert Settings.from_env({"LONGRUN_ENV": "dev"}).database_schema == "public"
    for name, value, message in [
        ("DATABASE_SCHEMA", "Bad-Name", "DATABASE_SCHEMA"),
        ("DATABASE_SCHEMA", "x; DROP", "DATABASE_SCHEMA"),
        ("ARCHIVE_RETENTION_DAYS", "-1", "ARCHIVE_RETENTION_DAYS"),
        ("ARCHIVE_RETENTION_INTERVAL", "0", "ARCHIVE_RETENTION_INTERVAL"),
        ("ARCHIVE_RETENTION_INTERVAL", "nan", "ARCHIVE_RETENTION_INTERVAL"),
        ("ARCHIVE_BATCH", "0", "ARCHIVE_BATCH"),
        ("ARCHIVE_BATCH", "many", "ARCHIVE_BATCH"),
        ("ARCHIVE_PARSERS", "-1", "ARCHIVE_PARSERS"),
        ("ARCHIVE_PARSERS", "17", "ARCHIVE_PARSERS"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({**env, name: value})
    with pytest.raises(ConfigError):
        check_schema('public"; --')


async def test_readyz_reports_postgres_but_stays_ready_without_it(
    make_client: Any, pg_settings: Settings, base_settings: Settings
) -> None:
    ok: TestClient[Any, Any] = await make_client(pg_settings)
    resp = await ok.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"redis": "ok", "postgres": "ok"}

    dead = base_settings.with_(database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    down: TestClient[Any, Any] = await make_client(dead)
    resp = await down.get("/readyz")
    assert resp.status == 200  # people are still served: only the history needs PostgreSQL
    body = await resp.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"] == "ok" and body["checks"]["postgres"].startswith("down")
    # Live requests do not need PostgreSQL; history says it is unavailable.
    assert (await down.get("/healthz")).status == 200
    resp = await down.get("/api/history")
    assert resp.status == 200 and (await resp.json())["items"] == []  # no session yet: nothing to look up
    created = await down.post(
        "/api/requests", json={"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
    )
    assert created.status == 201

    without: TestClient[Any, Any] = await make_client(base_settings)
    assert (await (await without.get("/readyz")).json())["checks"] == {"redis": "ok"}


def test_app_factory_skips_the_pool_without_a_database(base_settings: Settings) -> None:
    app = create_app(base_settings)
    assert all(getattr(ctx, "__name__", "") != "db_ctx" for ctx in app.cleanup_ctx)
    app = create_app(base_settings.with_(database_url="postgresql://x@127.0.0.1:1/test"))
    assert any(getattr(ctx, "__name__", "") == "db_ctx" for ctx in app.cleanup_ctx)
