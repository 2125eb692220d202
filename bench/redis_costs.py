"""What a request costs Redis: a bot's update (time and round trips) and the memory it holds.

``python -m bench.redis_costs [--calls 2000] [--records 10000]``

Both run against a redis-server of our own (the machine's binary, on a free
loopback port), so that command counts and ``used_memory`` are ours alone.

Update cost for a bot: one running request; ``--calls`` sequential
``progress()`` calls through the SDK (``RedisReporter.connect``), timed one
by one (p50, p99). One round trip each is shown twice: on the client, a
connection class that counts the requests written and the replies read; on
the server, ``INFO commandstats``: one ``EVALSHA`` per call and no other
command from the client (the commands the script runs are listed apart).

The Node SDK's update cost: the same on one more running request, through ``bots/js``'s
``RedisReporter`` (``bench/node_update_cost.mjs``, a ``node`` process of its own), on the
same redis-server right after the Python SDK's; skipped, and said so, where ``node`` or the
SDK's packages (``make node-deps``) are missing.

The log's cost: the same update script with the request's log key (every save appends to the
log) and without it (the script then skips the log), on two records of the same size, calls
alternating one by one so that load on the machine falls on both alike, each call timed by
Redis itself (``SLOWLOG`` with a threshold of 0: µs inside Redis), medians compared; the log
may add at most ``LOG_COST_TARGET``.

Redis memory per request: ``--records`` requests made the way the web and a
worker make them — the create script, the RQ ``run`` job (``Dispatcher.run``),
the start, two progress updates — and ``used_memory`` before and after, per
request; ``MEMORY USAGE`` of one record and of its job, and every key the
requests made, grouped by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection

from bench.common import Result, Row, bench_settings, cleanup, percentile, private_redis, processes
from bench.seed import FORMS, create_direct
from bots.sdk import RedisReporter
from server.devtools.processes import ROOT
from server.domain.catalog import get_service
from server.queue.dispatch import Dispatcher
from server.record import UPDATE_SCRIPT, Keys, RecordStore, dumps
from server.requests.lifecycle import Lifecycle

P50_TARGET_MS = 0.5
#: the most the request log may add to an update's time inside Redis
LOG_COST_TARGET = 0.10
BYTES_TARGET = 1500
#: commands a script runs inside Redis (counted by commandstats, never sent by the client)
SCRIPT_COMMANDS = {
    "get",
    "set",
    "publish",
    "spublish",
    "zadd",
    "zrem",
    "hincrby",
    "time",
    "exists",
    "del",
    "xadd",
    "rpush",
    "ltrim",
    "expire",
}


class CountingConnection(Connection):
    """A connection that counts what crosses the wire: requests written, replies read."""

    sent = 0
    read = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        CountingConnection.read += 1
        return await super().read_response(*args, **kwargs)


def client_calls(stats: dict[str, Any]) -> Counter[str]:
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_")})


async def update_cost(url: str, calls: int) -> dict[str, Any]:
    settings = bench_settings(url)
    redis = Redis.from_url(url)
    store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl)
    h = (await create_direct(store, 1))[0].hash
    try:
        async with RedisReporter.connect(settings) as report:
            for i in range(200):  # warm: script loaded, connection open
                await report.progress(h, 1 + i % 50, step="fetch", message="Fetching fines")
            times = []
            for i in range(calls):
                started = time.perf_counter()
                await report.progress(h, 1 + i * 98 // calls, step="fetch", message=f"Fetching fines ({i})")
                times.append((time.perf_counter() - started) * 1000)

        # The same calls through a counting connection, between two commandstats readings.
        pool = ConnectionPool.from_url(url, connection_class=CountingConnection)
        counted = Redis(connection_pool=pool)
        reporter = RedisReporter(Lifecycle(RecordStore(counted, Keys(settings.key_prefix), ttl=settings.request_ttl)))
        await reporter.progress(h, 99, step="fetch", message="warm")
        before = client_calls(await redis.info("commandstats"))
        CountingConnection.sent = CountingConnection.read = 0
        n = min(calls, 500)
        for i in range(n):
            await reporter.progress(h, 99, step="fetch", message=f"counted ({i})")
        sent, read = CountingConnection.sent, CountingConnection.read
        after = client_calls(await redis.info("commandstats"))
        await counted.aclose()
        delta = after - before
        delta["info"] -= 1  # the second reading itself
        from_client = {k: v for k, v in delta.items() if k not in SCRIPT_COMMANDS and v > 0}
        inside = {k: v for k, v in delta.items() if k in SCRIPT_COMMANDS and v > 0}
        return {
            "calls": calls,
            "p50_ms": round(percentile(times, 50), 3),
            "p99_ms": round(percentile(times, 99), 3),
            "counted_calls": n,
            "requests_written_per_call": sent / n,
            "replies_read_per_call": read / n,
            "server_commands_from_client": from_client,
            "server_commands_inside_script": inside,
        }
    finally:
        await cleanup(settings)
        await redis.aclose()


NODE_SCRIPT = ROOT / "bench" / "node_update_cost.mjs"


async def node_update_cost(url: str, calls: int) -> dict[str, Any]:
    """The Node SDK's progress() on the same Redis: timings and what crossed the wire."""
    if shutil.which("node") is None or not (ROOT / "bots" / "js" / "node_modules" / "ioredis").is_dir():
        return {"skipped": "node or the Node SDK's packages are missing (make node-deps)"}
    settings = bench_settings(url)
    store = RecordStore(Redis.from_url(url), Keys(settings.key_prefix), ttl=settings.request_ttl)
    h = (await create_direct(store, 1))[0].hash
    try:
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_SCRIPT),
            url,
            settings.key_prefix,
            h,
            str(calls),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"node_update_cost.mjs exited with {proc.returncode}: {err.decode()[-2000:]}")
        figures: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        await cleanup(settings)
        await store.redis.aclose()
    commands = figures.pop("server_commands")
    figures["server_commands_from_client"] = {k: v for k, v in commands.items() if k not in SCRIPT_COMMANDS}
    figures["server_commands_inside_script"] = {k: v for k, v in commands.items() if k in SCRIPT_COMMANDS}
    return figures


async def log_cost(url: str, calls: int = 3000) -> dict[str, Any]:
    """µs inside Redis per update, with the request log and without it: calls alternating one by
    one, each timed by Redis itself (SLOWLOG with a threshold of 0), medians compared."""
    settings = bench_settings(url)
    redis = Redis.from_url(url)
    store = RecordStore(redis, Keys(settings.key_prefix), ttl=settings.request_ttl)
    script = redis.register_script(UPDATE_SCRIPT)
    with_log, without_log = (t.hash for t in await create_direct(store, 2))
    control = dumps({"ttl": store.ttl, "heartbeat": 3600})
    times: dict[str, list[int]] = {"with": [], "without": []}

    async def update(h: str, keep_log: bool, i: int) -> None:
        keys = store._change_keys(h, store.keys.shard(h))
        if not keep_log:
            keys = keys[:6]  # no log key: the script leaves the log out
        patch = dumps({"progress": 1 + i % 98, "step": "fetch", "current_message": f"Fetching fines ({i})"})
        await script(keys=keys, args=[patch, control, store.keys.channel(h), h, ""])

    async def collect() -> None:
        for entry in await redis.slowlog_get(10_000):
            args = entry["command"].split(b" ")
            if args[0].lower() == b"evalsha" and len(args) > 2:
                times["with" if args[2] == b"7" else "without"].append(int(entry["duration"]))
        await redis.slowlog_reset()

    try:
        for i in range(200):  # warm, and the log full (LOG_MAX + LOG_SLACK at most) from here on
            await update(with_log, True, i)
            await update(without_log, False, i)
        await redis.config_set("slowlog-max-len", 10_000)
        await redis.config_set("slowlog-log-slower-than", 0)
        await redis.slowlog_reset()
        for i in range(calls):
            await update(with_log, True, i)
            await update(without_log, False, i)
            if i % 250 == 249:  # the slow log also holds the commands each script runs
                await collect()
        await collect()
        await redis.config_set("slowlog-log-slower-than", 10_000)
        median = {k: percentile([float(t) for t in v], 50) for k, v in times.items()}
        log_bytes = int(await redis.memory_usage(store.keys.log(with_log), samples=0) or 0)
        return {
            "calls_each": min(len(v) for v in times.values()),
            "usec_with_log": median["with"],
            "usec_without_log": median["without"],
            "extra": round(median["with"] / median["without"] - 1, 4),
            "log_entries": await redis.llen(store.keys.log(with_log)),
            "log_memory_bytes": log_bytes,
            "record_json_bytes": len(await store.get_raw(with_log) or b""),
        }
    finally:
        await cleanup(settings)
        await redis.aclose()


async def memory(url: str, records: int) -> dict[str, Any]:
    settings = bench_settings(url)
    keys = Keys(settings.key_prefix)
    redis = Redis.from_url(url)
    sync = SyncRedis.from_url(url)
    store = RecordStore(redis, keys, ttl=settings.request_ttl)
    life = Lifecycle(store)
    dispatcher = Dispatcher(sync, settings)
    service = get_service("vehicle-fines")
    gate = asyncio.Semaphore(32)

    async def one(h: str) -> None:
        async with gate:
            await asyncio.to_thread(dispatcher.run, h, service)
            await life.start(h, service)
            await life.progress(h, 30, "search", "Finding the vehicle")
            await life.progress(h, 55, "fetch", "Fetching fines")

    try:
        warm = await create_direct(store, 1, running=False)  # scripts loaded, queues exist
        await one(warm[0].hash)
        await redis.execute_command("MEMORY", "PURGE")
        before = int((await redis.info("memory"))["used_memory"])
        made = await create_direct(store, records, running=False)
        await asyncio.gather(*(one(t.hash) for t in made))
        after = int((await redis.info("memory"))["used_memory"])
        sample = made[0].hash
        record_bytes = int(await redis.memory_usage(keys.record(sample), samples=0) or 0)
        job_key = f"rq:job:{settings.key_prefix}{sample}-run"
        job_bytes = int(await redis.memory_usage(job_key, samples=0) or 0)
        kinds: Counter[str] = Counter()
        async for key in redis.scan_iter(match=f"*{settings.key_prefix}*", count=2000):
            name = key.decode()
            kind = (
                "record"
                if "local_request:" in name and not name.endswith(":otp")
                else "RQ job"
                if name.startswith("rq:job:")
                else "indexes (queues, in-flight, counts, tracking list)"
            )
            kinds[kind] += int(await redis.memory_usage(key, samples=0) or 0)
        return {
            "records": records,
            "service": service.slug,
            "request_data": FORMS[service.slug],
            "used_memory_growth": after - before,
            "bytes_per_request": round((after - before) / records),
            "memory_usage_record": record_bytes,
            "memory_usage_rq_job": job_bytes,
            "record_json_bytes": len(await store.get_raw(sample) or b""),
            "by_kind_per_request": {k: round(v / records) for k, v in kinds.items()},
        }
    finally:
        await cleanup(settings)
        await redis.aclose()
        sync.close()


async def run(calls: int = 2000, records: int = 10_000) -> Result:
    with processes("redis-costs") as procs, private_redis(procs) as url:
        info = await Redis.from_url(url).info("server")
        cost = await update_cost(url, calls)
        node = await node_update_cost(url, calls)
        log = await log_cost(url, max(calls, 200))
        mem = await memory(url, records)
    figures = {"redis": info.get("redis_version"), "update": cost, "node_update": node, "log": log, "memory": mem}
    return Result("redis_costs", figures, rows(figures))


def rows(figures: dict[str, Any]) -> list[Row]:
    cost, mem = figures["update"], figures["memory"]
    one_trip = cost["requests_written_per_call"] == 1 and cost["replies_read_per_call"] == 1
    client_cmds = cost["server_commands_from_client"]
    one_trip = one_trip and set(client_cmds) == {"evalsha"} and client_cmds["evalsha"] == cost["counted_calls"]
    met = one_trip and cost["p50_ms"] <= P50_TARGET_MS
    note = (
        f"p99 {cost['p99_ms']:.2f} ms; per call {cost['requests_written_per_call']:g} request written, "
        f"{cost['replies_read_per_call']:g} reply read; server saw {client_cmds} for {cost['counted_calls']} calls"
    )
    if cost["p50_ms"] > P50_TARGET_MS:
        note = f"missed by {cost['p50_ms'] - P50_TARGET_MS:.2f} ms; " + note
    per = mem["bytes_per_request"]
    kinds = ", ".join(f"{k} {v:,} B" for k, v in mem["by_kind_per_request"].items())
    mem_note = (
        f"MEMORY USAGE: record {mem['memory_usage_record']:,} B ({mem['record_json_bytes']} B of JSON), "
        f"RQ job {mem['memory_usage_rq_job']:,} B; by kind per request: {kinds}"
    )
    if per > BYTES_TARGET:
        mem_note = f"missed by {per - BYTES_TARGET:,} B ({per / BYTES_TARGET:.0%} of target); " + mem_note
    log = figures["log"]
    log_note = (
        f"{log['usec_with_log']} µs with the log vs {log['usec_without_log']} µs without "
        f"(medians of {log['calls_each']:,} alternating calls each, timed by SLOWLOG); "
        f"a full log ({log['log_entries']} entries of a "
        f"{log['record_json_bytes']:,} B record) takes {log['log_memory_bytes']:,} B of Redis memory"
    )
    if log["extra"] > LOG_COST_TARGET:
        log_note = f"missed by {(log['extra'] - LOG_COST_TARGET) * 100:.1f} points; " + log_note
    return [
        Row(
            what="the request log's cost to a bot's update",
            how="update script time inside Redis (SLOWLOG), with and without the request log, own "
            f"redis-server {figures['redis']}",
            ours=f"+{log['extra']:.1%} Redis time",
            target=f"≤ +{LOG_COST_TARGET:.0%}",
            met=log["extra"] <= LOG_COST_TARGET,
            note=log_note,
        ),
        Row(
            what="update cost for a bot",
            how=f"SDK progress(), {cost['calls']:,} sequential calls, own redis-server {figures['redis']}",
            ours=f"p50 {cost['p50_ms']:.3f} ms, {'1 round trip' if one_trip else 'NOT 1 round trip'}",
            target=f"1 round trip, p50 ≤ {P50_TARGET_MS} ms",
            met=met,
            note=note,
        ),
        node_row(figures["node_update"], cost, figures["redis"]),
        Row(
            what="Redis memory per request",
            how=f"used_memory growth for {mem['records']:,} running requests (record, RQ job, indexes)",
            ours=f"{per:,} B/request",
            target=f"≤ {BYTES_TARGET:,} B",
            met=per <= BYTES_TARGET,
            note=mem_note,
        ),
    ]


def node_row(node: dict[str, Any], python: dict[str, Any], redis_version: str) -> Row:
    """The Node SDK's update cost beside the Python SDK's, taken in the same run."""
    what = "update cost for a bot, Node SDK"
    target = f"1 round trip, p50 ≤ {P50_TARGET_MS} ms"
    if "skipped" in node:
        return Row(
            what=what, how="bots/js RedisReporter.progress()", ours="not run", target=target, note=node["skipped"]
        )
    client_cmds = node["server_commands_from_client"]
    one_trip = (
        node["requests_written_per_call"] == 1
        and set(client_cmds) == {"evalsha"}
        and client_cmds["evalsha"] == node["counted_calls"]
    )
    note = (
        f"p99 {node['p99_ms']:.2f} ms (Python {python['p99_ms']:.2f}); per call "
        f"{node['requests_written_per_call']:g} command sent; server saw {client_cmds} for "
        f"{node['counted_calls']} calls; Node {node['node']}, ioredis"
    )
    if node["p50_ms"] > P50_TARGET_MS:
        note = f"missed by {node['p50_ms'] - P50_TARGET_MS:.2f} ms; " + note
    return Row(
        what=what,
        how=f"bots/js RedisReporter.progress(), {node['calls']:,} sequential calls, same redis-server {redis_version}",
        ours=f"p50 {node['p50_ms']:.3f} ms, {'1 round trip' if one_trip else 'NOT 1 round trip'}",
        peer=f"Python SDK p50 {python['p50_ms']:.3f} ms, 1 round trip",
        ratio=f"{node['p50_ms'] / python['p50_ms']:.2f}" if python["p50_ms"] else "—",
        target=target,
        met=one_trip and node["p50_ms"] <= P50_TARGET_MS,
        note=note,
    )


def main(argv: Sequence[str] = ()) -> Result:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args(list(argv))
    result = asyncio.run(run(args.calls, args.records))
    return result.show()


if __name__ == "__main__":
    main(sys.argv[1:])
