"""The archive end to end: terminal records → stream → archiver process → PostgreSQL.

Real Redis, real PostgreSQL (each test in its own schema), real archiver
processes; the PostgreSQL outage is a TCP proxy the test cuts, never the
machine's server.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from jobs.archiver import Archiver
from server.devtools.processes import Processes
from server.history.backlog import archive_status
from server.history.db import migrate
from server.history.rows import ArchiveError, scrub, step_seconds, to_row
from server.record import ARCHIVE_GROUP, SHARDS, Keys, private_view
from server.settings import Settings
from tests.archive_helpers import TcpProxy, archived_count, insert, make_terminal, row, rows, tools
from tests.helpers import outbox, wait_for, wait_status


async def wait_archived(settings: Settings, n: int, timeout: float = 30.0) -> None:
    async def probe() -> bool:
        return await archived_count(settings) >= n

    await wait_for(probe, timeout=timeout, what=f"{n} archived rows")


# --------------------------------------------------------------------------- record → row

T0 = 1_767_225_600.0  # 2026-01-01


def test_row_keeps_timings_and_drops_secrets() -> None:
    rec = {
        "hash": "req_" + "a" * 25,
        "service_slug": "vehicle-fines",
        "status": "completed",
        "user_id": "u_1",
        "attempt": 2,
        "request_data": {"plate": "12B345-67", "password": "hunter2", "nested": {"otp": "123456", "x": "a\x00b"}},
        "result_data": {"fines": [], "access_token": "t"},
        "created_at": "2026-01-01T00:00:00.000Z",
        "_p": {
            "token": "sha256-of-the-token",
            "created": T0,
            "started": T0 + 2,
            "finished": T0 + 12.5,
            "waited": 3.0,
            "steps": {"login": T0 + 2, "search": T0 + 4, "fetch": T0 + 9},
        },
    }
    row = to_row(rec)
    assert (row.created, row.started, row.finished) == (T0, T0 + 2, T0 + 12.5)
    assert row.duration == 7.5 and row.waited == 3.0 and row.attempts == 2
    assert row.steps == {"login": 2.0, "search": 5.0, "fetch": 3.5}
    assert row.request_data == {"plate": "12B345-67", "nested": {"x": "ab"}}
    assert row.result_data == {"fines": []}
    assert b"sha256-of-the-token" not in row.binary() and "sha256-of-the-token" not in str(row.params())


def test_row_from_public_fields_only_and_never_started() -> None:
    rec = {
        "hash": "req_" + "b" * 25,
        "service_slug": "vehicle-fines",
        "status": "cancelled",
        "created_at": "2026-01-01T00:00:00.000Z",
        "finished_at": "2026-01-01T00:00:05.250Z",
    }
    row = to_row(rec)
    assert row.started is None and row.duration is None and row.steps == {} and row.user_id == ""
    assert row.finished - row.created == pytest.approx(5.25)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hash": "nope"}, "hash"),
        ({"status": "processing"}, "not terminal"),
        ({"service_slug": None}, "service_slug"),
        ({"finished_at": "yesterday"}, "ISO"),
        ({"finished_at": None}, "finished_at is missing"),
        ({"_p": {"finished": 1e300}}, "out of range"),
        ({"_p": {"finished": float("nan")}}, "out of range"),
        ({"created_at": "1900-01-01T00:00:00Z"}, "out of range"),
    ],
)
def test_bad_records_are_refused_with_the_field_named(change: dict[str, Any], message: str) -> None:
    rec = {"hash": "req_" + "c" * 25, "service_slug": "x", "status": "failed", "finished_at": "2026-01-01T00:00:00Z"}
    rec.update(change)
    with pytest.raises(ArchiveError, match=message):
        to_row(rec)


_KEYS = st.sampled_from(
    ["otp", "OTP", "Password", "pin", "cvv2", "x_token", "API_SECRET", "to\u212aen", "tok\x00en", "plate", "name", "n"]
)
_NAMES = _KEYS | st.text(max_size=6)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["a\x00b", "otp", "x_token", "\u212a"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_NAMES, children, max_size=4),
    max_leaves=40,
)


@given(request_data=st.dictionaries(_NAMES, _JSON, max_size=5), result_data=_JSON)
@hypothesis_settings(max_examples=300, deadline=None)
def test_rows_scrub_request_and_result_data_like_scrub(request_data: dict[str, Any], result_data: Any) -> None:
    """The row's JSON columns (and their COPY encoding) are exactly what :func:`scrub` leaves,
    whichever way to_row gets there."""
    rec = {
        "hash": "req_" + "e" * 25,
        "service_slug": "vehicle-fines",
        "status": "completed",
        "finished_at": "2026-01-01T00:00:00Z",
        "request_data": request_data,
        "result_data": result_data,
    }
    row = to_row(rec)
    assert row.request_data == scrub(request_data)
    assert row.result_data == scrub(result_data)
    encoded = row.binary()
    assert orjson.dumps(scrub(request_data)) in encoded
    if result_data is not None:
        assert orjson.dumps(scrub(result_data)) in encoded


def test_nesting_past_the_cut_off_is_cut_even_without_secrets() -> None:
    deep: Any = "bottom"
    for _ in range(25):
        deep = {"d": deep}
    rec = {"hash": "req_" + "f" * 25, "service_slug": "x", "status": "failed", "finished_at": "2026-01-01T00:00:00Z"}
    row = to_row({**rec, "request_data": {"a": deep}, "result_data": [[[[{"ok": 1}]]]] * 30})
    assert row.request_data == scrub({"a": deep}) != {"a": deep}
    assert row.result_data == [[[[{"ok": 1}]]]] * 30  # many brackets, shallow: kept


def test_step_seconds_run_to_the_next_step_and_the_end() -> None:
    assert step_seconds([(10.0, "a"), (12.5, "b")], 20.0) == {"a": 2.5, "b": 7.5}
    assert step_seconds([], 20.0) == {}


async def test_writing_a_batch_again_adds_only_the_new_rows(pg_settings: Settings) -> None:
    from server.history.db import connect
    from server.history.writer import write_rows

    await migrate(pg_settings)
    now = time.time()
    first = [row(f"u_{i}", now - i, result_data={"fines": [], "n": i}) for i in range(10)]
    more = [row("u_new", now - 0.5) for _ in range(5)]
    conn = await connect(pg_settings, statement_timeout=10, application="test")
    try:
        assert await write_rows(conn, first) == 10
        assert await write_rows(conn, first) == 0  # the primary key refuses the COPY: staged merge
        assert await write_rows(conn, [*first[:3], *more, more[0]]) == 5
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT hash), bool_and(jsonb_typeof(result_data) = 'object'), "
            "bool_and(jsonb_typeof(steps) = 'object') FROM history"
        )
        assert await cur.fetchone() == (15, 15, True, True)
    finally:
        await conn.close()
    stored = {r["hash"]: r for r in rows(pg_settings)}
    assert stored[first[4].hash]["result_data"] == {"fines": [], "n": 4}
    assert stored[first[4].hash]["finished_at"].timestamp() == pytest.approx(first[4].finished, abs=1e-6)


async def test_rows_read_back_exactly_as_written(pg_settings: Settings) -> None:
    """The binary COPY encoding, column by column: NULLs, times to the microsecond, floats,
    text beyond ASCII, JSON; for a row from to_row and for one built by hand."""
    from server.history.db import connect
    from server.history.writer import write_rows

    await migrate(pg_settings)
    rec = {
        "hash": "req_" + "g" * 25,
        "service_slug": "credit-score-rating",
        "status": "completed",
        "user_id": "کاربر_۱",
        "attempt": 3,
        "request_data": {"name": "رضا", "n": [1, 2.5, None, True]},
        "result_data": ["a", {"b": {}}],
        "_p": {
            "created": T0 + 0.123456,
            "started": T0 + 1.5,
            "finished": T0 + 20.000001,
            "waited": 2.25,
            "app": "shop",
            "user_ref": "customer:۴۲@shop",
        },
    }
    never_started = row("u_2", T0 + 7.75, status="cancelled", started=None, duration=None, steps={}, result_data=None)
    failed = row("u_3", T0 + 9.0, status="failed", error="Ü\nnew line\ttab \\ back")
    conn = await connect(pg_settings, statement_timeout=10, application="test")
    try:
        assert await write_rows(conn, [to_row(rec), never_started, failed]) == 3
    finally:
        await conn.close()
    stored = {r["hash"]: r for r in rows(pg_settings)}
    got = stored[rec["hash"]]
    assert got["user_id"] == "کاربر_۱" and got["service_slug"] == "credit-score-rating" and got["attempts"] == 3
    assert got["created_at"] == datetime.fromtimestamp(T0 + 0.123456, UTC)
    assert got["started_at"] == datetime.fromtimestamp(T0 + 1.5, UTC)
    assert got["finished_at"] == datetime.fromtimestamp(T0 + 20.000001, UTC)
    assert got["duration"] == 16.25 and got["waited"] == 2.25 and got["error"] is None and got["steps"] == {}
    assert got["request_data"] == rec["request_data"] and got["result_data"] == ["a", {"b": {}}]
    assert got["app"] == "shop" and got["user_ref"] == "customer:۴۲@shop"
    got = stored[never_started.hash]
    assert got["app"] is None and got["user_ref"] is None
    assert got["started_at"] is None and got["duration"] is None and got["result_data"] is None
    assert got["status"] == "cancelled" and got["finished_at"] == datetime.fromtimestamp(T0 + 7.75, UTC)
    got = stored[failed.hash]
    assert got["error"] == "Ü\nnew line\ttab \\ back" and got["steps"] == {"login": 2.0, "search": 6.0}
    assert got["request_data"] == {"plate": "12B345-67"} and got["duration"] == 8.0


async def test_a_later_outcome_replaces_an_earlier_one(pg_settings: Settings) -> None:
    """A request an operator retried after it failed finishes again: history keeps the latest."""
    import dataclasses

    from server.history.db import connect
    from server.history.writer import write_rows

    await migrate(pg_settings)
    now = time.time()
    failed = dataclasses.replace(row("u_retry", now - 60), status="failed", error="bot down")
    completed = dataclasses.replace(failed, status="completed", error=None, finished=now, result_data={"ok": 1})
    conn = await connect(pg_settings, statement_timeout=10, application="test")
    try:
        assert await write_rows(conn, [failed]) == 1
        assert await write_rows(conn, [completed]) == 1  # the newer outcome replaces the row
        assert await write_rows(conn, [failed]) == 0  # a late re-delivery of the old one does not
        assert await write_rows(conn, [failed, completed]) == 0  # nor within one batch
    finally:
        await conn.close()
    [stored] = rows(pg_settings, "hash = %s", [failed.hash])
    assert stored["status"] == "completed" and stored["error"] is None and stored["result_data"] == {"ok": 1}


# --------------------------------------------------------------------------- the archiver process


async def test_completed_failed_and_cancelled_are_archived_once_with_their_timings(
    redis: Redis, pg_settings: Settings, processes: Processes
) -> None:
    store, life = tools(redis, pg_settings)
    processes.archiver(pg_settings)
    done = await make_terminal(store, life, outcome="completed", step_pause=0.15, user="u_a")
    failed = await make_terminal(store, life, outcome="failed", step_pause=0.05, user="u_a")
    cancelled = await make_terminal(store, life, outcome="cancelled", start=False, user="u_b")
    await wait_archived(pg_settings, 3)
    await asyncio.sleep(1.0)  # a duplicate would show up by now
    by_hash = {r["hash"]: r for r in rows(pg_settings)}
    assert set(by_hash) == {done, failed, cancelled}

    for h in (done, failed, cancelled):
        stored = await store.get(h)
        assert stored is not None
        p = private_view(stored)
        row = by_hash[h]
        assert row["status"] == stored["status"] and row["user_id"] == stored["user_id"]
        assert row["created_at"].timestamp() == pytest.approx(p["created"], abs=1e-3)
        assert row["finished_at"].timestamp() == pytest.approx(p["finished"], abs=1e-3)
        if "started" in p:
            assert row["started_at"].timestamp() == pytest.approx(p["started"], abs=1e-3)
            assert row["duration"] == pytest.approx(p["finished"] - p["started"], abs=2e-3)
        assert "not-a-real-token" not in str(row) and p["token"] not in str(row)

    row = by_hash[done]
    assert set(row["steps"]) == {"login", "search", "fetch", "summarize"}
    assert all(s >= 0.14 for s in row["steps"].values()), row["steps"]
    assert row["duration"] >= 0.6 and row["result_data"] == {"total": 3, "fines": []}
    assert by_hash[failed]["error"] == "The portal said no." and by_hash[failed]["result_data"] is None
    assert by_hash[cancelled]["started_at"] is None and by_hash[cancelled]["duration"] is None

    status = await archive_status(redis, store.keys)
    assert status.backlog == 0 and status.in_progress == 0 and status.archived_total == 3
    assert status.last_archived_at is not None and status.oldest_age is None


async def test_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(
    redis: Redis, pg_settings: Settings, processes: Processes
) -> None:
    store, life = tools(redis, pg_settings)
    archiver = processes.archiver(pg_settings)
    await make_terminal(store, life, user="u_first")
    await wait_archived(pg_settings, 1)

    assert pg_settings.database_url
    blocker = await psycopg.AsyncConnection.connect(
        pg_settings.database_url, options=f"-c search_path={pg_settings.database_schema}"
    )
    try:
        # Hold the archiver mid-batch: it has read the entries, and its COPY straight into
        # history waits for this lock (SHARE conflicts with the ROW EXCLUSIVE lock COPY takes).
        await blocker.execute("LOCK TABLE history IN SHARE MODE")
        outcomes = ("completed", "failed", "cancelled")
        made = [
            await make_terminal(store, life, user=f"u_{i % 5}", outcome=outcomes[i % 3], start=i % 3 != 2)
            for i in range(30)
        ]

        async def stuck() -> bool:
            cur = await blocker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'longrun-archiver' "
                "AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            status = await archive_status(redis, store.keys)
            return bool(row and row[0] >= 1 and status.in_progress >= 1)

        await wait_for(stuck, timeout=15, what="the archiver to wait on the lock mid-batch")
        processes.stop(archiver, signal.SIGKILL)
    finally:
        await blocker.rollback()
        await blocker.close()

    await asyncio.sleep(0.5)
    assert await archived_count(pg_settings) == 1, "a killed batch must not commit"
    assert (await archive_status(redis, store.keys)).backlog == 30

    processes.archiver(pg_settings)
    await wait_archived(pg_settings, 31)
    await asyncio.sleep(1.0)
    archived = rows(pg_settings)
    hashes = [r["hash"] for r in archived]
    assert len(hashes) == len(set(hashes)) == 31
    assert set(made) <= set(hashes)
    status = await archive_status(redis, store.keys)
    assert status.backlog == 0 and status.in_progress == 0


async def test_postgres_down_keeps_the_backlog_in_the_stream_until_it_returns(
    redis: Redis, pg_settings: Settings, processes: Processes
) -> None:
    assert pg_settings.database_url
    proxy = TcpProxy(pg_settings.database_url)
    await proxy.start()
    proxied = pg_settings.with_(database_url=proxy.url)
    store, life = tools(redis, pg_settings)
    try:
        processes.archiver(proxied)
        await make_terminal(store, life)
        await wait_archived(pg_settings, 1)

        await proxy.cut()
        made = [await make_terminal(store, life, user=f"u_{i}") for i in range(20)]
        await asyncio.sleep(4.0)
        status = await archive_status(redis, store.keys)
        assert status.backlog == 20 and status.oldest_age is not None and status.oldest_age >= 3.5
        assert status.last_error, "the archiver notes why it waits"
        assert await archived_count(pg_settings) == 1

        await proxy.restore()
        await wait_archived(pg_settings, 21, timeout=30)
        assert {r["hash"] for r in rows(pg_settings)} >= set(made)
        status = await archive_status(redis, store.keys)
        assert status.backlog == 0 and status.last_error is None
    finally:
        await proxy.close()


# --------------------------------------------------------------------------- the archiver in-process


async def test_a_batch_committed_but_not_acknowledged_is_not_archived_twice(
    redis: Redis, pg_settings: Settings
) -> None:
    store, life = tools(redis, pg_settings)
    for i in range(12):
        await make_terminal(store, life, user=f"u_{i}")
    first = Archiver(pg_settings, redis, consumer="archiver-test")
    try:
        assert await first.prepare()
        entries = await first.read_new()
        assert len(entries) == 12
        assert await first.write(first.parse(entries)) == 12  # committed; "dies" before XACK
    finally:
        await first.close()
    assert (await archive_status(redis, store.keys)).in_progress == 12

    second = Archiver(pg_settings, redis, consumer="archiver-test")
    try:
        assert await second.drain() == 0  # re-read from its pending list, stored once
    finally:
        await second.close()
    assert await archived_count(pg_settings) == 12
    status = await archive_status(redis, store.keys)
    assert status.backlog == 0 and status.in_progress == 0


async def test_a_parser_process_killed_mid_run_loses_and_duplicates_nothing(
    redis: Redis, pg_settings: Settings
) -> None:
    store, life = tools(redis, pg_settings)
    made = [await make_terminal(store, life, user=f"u_{i % 7}") for i in range(120)]
    archiver = Archiver(pg_settings, redis, consumer="archiver-test", batch=10, parsers=2)
    assert pg_settings.database_url
    blocker = await psycopg.AsyncConnection.connect(
        pg_settings.database_url, options=f"-c search_path={pg_settings.database_schema}"
    )
    try:
        assert await archiver.prepare()
        # Hold the first COPY (see the test above) while batches are read ahead and parsed.
        await blocker.execute("LOCK TABLE history IN SHARE MODE")
        draining = asyncio.create_task(archiver.drain())

        async def stuck() -> bool:
            cur = await blocker.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'longrun-archiver' "
                "AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            return bool(row and row[0] >= 1 and multiprocessing.active_children())

        await wait_for(stuck, timeout=15, what="the archiver to wait on the lock with its parsers started")
        victim = multiprocessing.active_children()[0]
        os.kill(victim.pid or 0, signal.SIGKILL)
        await asyncio.to_thread(victim.join, 10)
        assert not victim.is_alive()
        await blocker.rollback()
        assert await asyncio.wait_for(draining, 60) == 120
    finally:
        await blocker.close()
        await archiver.close()
    assert archiver.parsers.restarts >= 1, "the parsers were started again"
    hashes = [r["hash"] for r in rows(pg_settings)]
    assert len(hashes) == len(set(hashes)) == 120 and set(hashes) == set(made)
    status = await archive_status(redis, store.keys)
    assert status.backlog == 0 and status.in_progress == 0


async def test_entries_a_dead_archiver_left_pending_are_claimed(redis: Redis, pg_settings: Settings) -> None:
    store, life = tools(redis, pg_settings)
    for _ in range(5):
        await make_terminal(store, life)
    dead = Archiver(pg_settings, redis, consumer="archiver-dead")
    assert await dead.prepare()
    assert len(await dead.read_new()) == 5  # read, then never heard of again
    await dead.close()
    alive = Archiver(pg_settings, redis, consumer="archiver-alive", claim_idle=0.0)
    try:
        assert await alive.prepare()
        claimed = await alive.claim_stale()
        assert len(claimed) == 5
        assert await alive.process(claimed)
    finally:
        await alive.close()
    assert await archived_count(pg_settings) == 5
    assert (await archive_status(redis, store.keys)).backlog == 0


async def test_unreadable_entries_are_dropped_not_blocking_the_stream(
    redis: Redis, pg_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store, life = tools(redis, pg_settings)
    keys = Keys(pg_settings.key_prefix)
    good = await make_terminal(store, life)
    await redis.xadd(keys.archive(0), {"r": b"not json"})
    await redis.xadd(keys.archive(1), {"r": orjson.dumps({"hash": "req_" + "d" * 25, "status": "processing"})})
    weird = store.keys.new_hash()
    bad_value = {"hash": weird, "service_slug": "x", "status": "failed", "finished_at": "2026-01-01T00:00:00Z"}
    await redis.xadd(keys.archive(keys.shard(weird)), {"r": orjson.dumps(bad_value)})
    archiver = Archiver(pg_settings, redis, consumer="archiver-test")
    try:
        assert await archiver.drain() == 2
    finally:
        await archiver.close()
    assert archiver.dropped == 2
    assert {r["hash"] for r in rows(pg_settings)} == {good, weird}
    assert (await archive_status(redis, keys)).backlog == 0
    assert "not a JSON object" in caplog.text and "not terminal" in caplog.text


async def test_a_row_postgresql_refuses_is_dropped_alone(redis: Redis, pg_settings: Settings) -> None:
    import dataclasses

    good = row("u_1", time.time())
    bad = dataclasses.replace(row("u_2", time.time()), status="exploded")  # fails the CHECK
    archiver = Archiver(pg_settings, redis, consumer="archiver-test")
    try:
        assert await archiver.prepare()
        assert await archiver.write([good, bad]) == 1
    finally:
        await archiver.close()
    assert archiver.dropped == 1
    assert [r["hash"] for r in rows(pg_settings)] == [good.hash]


async def test_the_archiver_survives_its_stream_and_its_schema_going_away(
    redis: Redis, pg_settings: Settings, database_url: str
) -> None:
    from psycopg import sql

    store, life = tools(redis, pg_settings)
    archiver = Archiver(pg_settings, redis, consumer="archiver-test", max_backoff=0.2)
    try:
        assert await archiver.prepare()
        await redis.delete(*[store.keys.archive(s) for s in range(SHARDS)])
        assert await archiver.read_new() == []  # NOGROUP: groups made again
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(pg_settings.database_schema)))
        made = {await make_terminal(store, life) for _ in range(3)}
        assert await archiver.drain() == 3  # the write meets no table, migrates, goes again
    finally:
        await archiver.close()
    assert {r["hash"] for r in rows(pg_settings)} == made


async def test_status_reports_backlog_and_lag_before_the_archiver_runs(redis: Redis, pg_settings: Settings) -> None:
    store, life = tools(redis, pg_settings)
    before = await archive_status(redis, store.keys)
    assert before.backlog == 0 and before.oldest_age is None and before.last_archived_at is None
    for _ in range(4):
        await make_terminal(store, life)
    await asyncio.sleep(0.3)
    status = await archive_status(redis, store.keys)
    assert status.backlog == 4 and status.in_progress == 0 and status.oldest_age is not None
    assert status.oldest_age >= 0.3
    assert set(status.as_dict()) >= {"backlog", "oldest_age", "last_archived_at", "archived_total"}


async def test_retention_deletes_old_rows_in_batches(redis: Redis, pg_settings: Settings) -> None:
    from server.history.db import connect
    from server.history.writer import delete_expired

    store, life = tools(redis, pg_settings)
    hashes = [await make_terminal(store, life, user=f"u_{i}") for i in range(7)]
    archiver = Archiver(pg_settings, redis, consumer="archiver-test")
    try:
        assert await archiver.drain() == 7
    finally:
        await archiver.close()
    conn = await connect(pg_settings, statement_timeout=10, application="test")
    try:
        await conn.execute(
            "UPDATE history SET finished_at = now() - interval '400 days' WHERE hash = ANY(%s)", [hashes[:5]]
        )
        assert await delete_expired(conn, 365, batch=2) == 5
        assert await delete_expired(conn, 0) == 0  # 0 keeps everything
    finally:
        await conn.close()
    assert {r["hash"] for r in rows(pg_settings)} == set(hashes[5:])


async def test_the_archiver_process_deletes_expired_history_while_records_keep_coming(
    redis: Redis, pg_settings: Settings, processes: Processes
) -> None:
    """Retention runs on its schedule under sustained load, not only when the archiver idles."""
    settings = pg_settings.with_(archive_retention_days=30, archive_retention_interval=0.5, archive_batch=10)
    await migrate(settings)
    expired = [row(f"u_{i}", time.time() - 90 * 86_400) for i in range(40)]
    await insert(settings, [*expired, row("u_recent", time.time() - 86_400)])
    keys = Keys(settings.key_prefix)
    finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for start in range(0, 20_000, 2000):  # thousands of batches of 10 waiting
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, start + 2000):
                h = keys.new_hash()
                rec = {"hash": h, "service_slug": "vehicle-fines", "status": "failed", "user_id": f"u_{i % 97}"}
                pipe.xadd(keys.archive(keys.shard(h)), {"r": orjson.dumps({**rec, "finished_at": finished})})
            await pipe.execute()
    processes.archiver(settings)

    async def expired_gone() -> bool:
        gone = not rows(settings, "finished_at < now() - interval '30 days'")
        return gone and await archived_count(settings) > 1

    await wait_for(expired_gone, timeout=30, what="the expired rows to be deleted")
    status = await archive_status(redis, keys)
    assert status.backlog > 0, "retention ran only once the backlog was gone"
    assert rows(settings, "user_id = 'u_recent'"), "a row younger than the retention is kept"


async def test_a_retention_run_deletes_a_bounded_number_of_rows(
    redis: Redis, pg_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobs.archiver import archiving as archiver_module

    monkeypatch.setattr(archiver_module, "RETENTION_ROWS", 10)
    monkeypatch.setattr(archiver_module, "RETENTION_BATCH", 5)
    settings = pg_settings.with_(archive_retention_days=30)
    await migrate(settings)
    await insert(settings, [row(f"u_{i}", time.time() - 90 * 86_400) for i in range(25)])
    archiver = Archiver(settings, redis, consumer="archiver-test", retention_every=3600, retention_catchup=2)
    try:
        archiver._next_retention = time.monotonic() + 3600
        assert await archiver.retention() == 10
        assert archiver._next_retention <= time.monotonic() + 2  # more left: back soon, not in an hour
        assert await archiver.retention() == 10
        assert await archiver.retention() == 5
    finally:
        await archiver.close()
    assert not rows(settings)


async def test_groups_start_from_the_beginning_of_each_stream(redis: Redis, pg_settings: Settings) -> None:
    store, life = tools(redis, pg_settings)
    await make_terminal(store, life)  # handed over before any archiver existed
    await migrate(pg_settings)
    archiver = Archiver(pg_settings, redis, consumer="archiver-test")
    try:
        assert await archiver.drain() == 1
    finally:
        await archiver.close()
    groups = await redis.xinfo_groups(store.keys.archive(0))
    assert [g["name"] for g in groups] == [ARCHIVE_GROUP.encode()]
    assert SHARDS == 16


# --------------------------------------------------------------------------- the whole system


async def test_otp_request_archived_with_its_wait_and_never_its_code(
    redis: Redis, pg_full_settings: Settings, processes: Processes, aiohttp_client: Any
) -> None:
    from server.web.app import create_app

    settings = pg_full_settings
    processes.workers(settings, count=2)
    processes.archiver(settings)
    client: TestClient[Any, Any] = await aiohttp_client(create_app(settings))
    keys = Keys(settings.key_prefix)
    resp = await client.post(
        "/api/requests",
        json={"service": "credit-score-rating", "data": {"national_id": "0012345678", "mobile": "09121234567"}},
    )
    assert resp.status == 201, await resp.text()
    h = (await resp.json())["hash"]
    await wait_status(redis, keys, h, "waiting_otp", timeout=30)
    await asyncio.sleep(0.5)  # the person takes a moment to read the text
    code = (await outbox(settings.bot_api_url, h))[0]["code"]
    assert (await client.post(f"/api/requests/{h}/otp", json={"otp": code})).status == 202
    done = await wait_status(redis, keys, h, "completed", "failed", timeout=30)
    assert done["status"] == "completed", done
    await wait_archived(settings, 1)

    (row,) = rows(settings)
    assert row["hash"] == h and row["status"] == "completed" and row["waited"] >= 0.4
    p = private_view(done)
    assert row["duration"] == pytest.approx(p["finished"] - p["started"] - p["waited"], abs=2e-3)
    assert set(row["steps"]) == {"login", "captcha", "otp", "report"}
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        dump = conn.execute(f"SELECT string_agg(h::text, ' ') FROM {settings.database_schema}.history h").fetchone()
    assert dump is not None and code not in dump[0] and p["token"] not in dump[0]

    listing = await (await client.get("/api/history")).json()
    assert [i["hash"] for i in listing["items"]] == [h] and listing["enabled"] is True
    entry = await client.get(f"/api/history/{h}")
    assert entry.status == 200 and (await entry.json())["result_data"] == row["result_data"]


async def test_without_a_database_the_streams_keep_nothing_older_than_a_record(
    redis: Redis, base_settings: Settings, processes: Any
) -> None:
    """No archive configured: finished records (and their personal data) leave the streams once
    they are older than a record lives."""
    short = base_settings.with_(request_ttl=2, database_url=None)
    store, life = tools(redis, short)
    hashes = [await make_terminal(store, life) for _ in range(3)]
    keys = Keys(short.key_prefix)
    assert sum([await redis.xlen(keys.archive(keys.shard(h))) for h in set(hashes)]) >= 1
    await asyncio.sleep(2.2)
    processes.archiver(short)

    async def trimmed() -> bool:
        return all([await redis.xlen(keys.archive(shard)) == 0 for shard in range(16)])

    await wait_for(trimmed, timeout=15, what="the streams to be trimmed")
