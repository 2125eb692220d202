"""Longrun on a real 3-master Redis Cluster on loopback ports.

A full request — the bot's progress, the OTP prompt, the code typed into a
WebSocket, the result — through the web server, RQ workers and demo bots as
separate processes, all on the cluster. Every script touches one hash slot
(a cross-slot script would fail with CROSSSLOT); requests spread over the
nodes; the original ``local_request:…`` keys stay readable; the hub listens on
each request's shard channel.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from server.devtools.processes import Processes
from server.record import Keys, key_slot
from server.settings import Settings
from tests.helpers import outbox, wait_for

CREDIT = {"national_id": "0012345678", "mobile": "09121234567"}


def redis_7() -> str | None:
    """A redis-server of version 7 or later (sharded pub/sub), or None."""
    for candidate in (shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and Path(candidate).exists():
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True).stdout
            match = re.search(r"v=(\d+)\.", out)
            if match and int(match.group(1)) >= 7:
                return candidate
    return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[int]]:
    server = redis_7()
    if server is None:
        pytest.skip("needs redis-server 7 or later on PATH (sharded pub/sub) to start a Redis Cluster")
    ports = cluster_ports(3)
    procs = []
    for port in ports:
        node = tmp_path / str(port)
        node.mkdir()
        procs.append(
            subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no",
                 "--logfile", "redis.log"],
                cwd=node,
            )
        )  # fmt: skip
    try:
        for port in ports:
            wait_until(lambda p=port: _pings(p))
        # CLUSTER ADDSLOTSRANGE + MEET, as `redis-cli --cluster create` would do
        first = redis.Redis(port=ports[0])
        share = 16384 // 3
        for i, port in enumerate(ports):
            node = redis.Redis(port=port)
            end = 16383 if i == 2 else (i + 1) * share - 1
            node.execute_command("CLUSTER", "ADDSLOTSRANGE", i * share, end)
            if i:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
            node.close()
        first.close()
        for port in ports:
            wait_until(lambda p=port: _cluster_ok(p), timeout=20)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def cluster_ports(n: int) -> list[int]:
    """Free ports whose cluster-bus port (+10000) is free too and below 65536."""
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 30000)
        if port in ports:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        ports.append(port)
    return ports


def wait_until(probe: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.05)
    raise AssertionError("the cluster did not come up")


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.ConnectionError:
        return False


def _cluster_ok(port: int) -> bool:
    info = redis.Redis(port=port).execute_command("CLUSTER", "INFO")
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text and "cluster_known_nodes:3" in text


async def test_a_full_request_with_otp_and_a_socket_on_a_redis_cluster(
    cluster: list[int], pg_settings: Settings, processes: Processes
) -> None:
    from tests.test_faults import start_services

    settings = await start_services(
        processes, pg_settings.with_(redis_url=f"redis://127.0.0.1:{cluster[0]}/0", redis_cluster=True)
    )
    processes.workers(settings)
    processes.archiver(settings)
    keys = Keys(settings.key_prefix)
    api, ws_base = settings.public_url, settings.public_url.replace("http", "ws")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{api}/api/requests", json={"service": "credit-score-rating", "data": CREDIT}) as r:
            assert r.status == 201, await r.text()
            created = await r.json()
        h, auth = created["hash"], {"Authorization": f"Bearer {created['access_token']}"}
        ws = await http.ws_connect(f"{ws_base}/ws/requests/{h}", headers=auth)
        seen: list[dict[str, Any]] = []

        async def until(status: str) -> dict[str, Any]:
            async with asyncio.timeout(30):
                while True:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    frame = orjson.loads(msg.data)
                    if frame["type"] in ("snapshot", "update"):
                        seen.append(frame["request"])
                        if frame["request"]["status"] == status:
                            return dict(frame["request"])

        waiting = await until("waiting_otp")
        assert waiting["otp_data"]["length"] == 6
        code = (await wait_for(lambda: outbox(settings.bot_api_url, h), what="the SMS"))[0]["code"]
        await ws.send_str(orjson.dumps({"type": "otp", "otp": code}).decode())
        done = await until("completed")
        assert 300 <= done["result_data"]["score"] <= 850
        assert any(0 < r["progress"] < 100 for r in seen)  # progress arrived live over the socket
        seqs = [r["seq"] for r in seen]
        assert seqs == sorted(seqs)
        await ws.close()

        # more requests: they spread over the nodes, each with all its keys in one slot
        hashes = [h]
        for _ in range(12):
            body = {"service": "vehicle-fines", "data": {"plate": "12B345-67", "national_id": "0012345678"}}
            async with http.post(f"{api}/api/requests", json=body) as r:
                hashes.append((await r.json())["hash"])

    client = RedisCluster(host="127.0.0.1", port=cluster[0])
    try:
        owners = {client.get_node_from_key(keys.record(x)).port for x in hashes}
        assert len(owners) >= 2  # records live on more than one master
        for x in hashes:
            shard = keys.shard(x)
            slot = key_slot(keys.record(x))
            for key in (
                keys.otp(x),
                keys.shard_channel(x),
                keys.archive(shard),
                keys.inflight(shard),
                keys.counts(shard),
            ):
                assert key_slot(key) == slot
        # the original layout stays readable by old bots: a plain GET of local_request:{hash}
        record = orjson.loads(client.get(keys.record(h)))
        assert record["status"] == "completed" and record["hash"] == h

        async def all_done() -> bool:
            raws = [client.get(keys.record(x)) for x in hashes[1:]]
            return all(r and orjson.loads(r)["status"] == "completed" for r in raws)

        await wait_for(all_done, timeout=30, what="the other requests to finish on the cluster")
    finally:
        client.close()

    # the archiver read every shard's stream on the cluster and wrote the history
    import psycopg

    async def archived() -> int | None:
        with psycopg.connect(str(settings.database_url)) as conn:
            n = conn.execute(
                f"SELECT count(*) FROM {settings.database_schema}.history WHERE hash = ANY(%s)", (hashes,)
            ).fetchone()
        return n[0] if n and n[0] == len(hashes) else None

    assert await wait_for(archived, timeout=30, what="the archive to catch up") == len(hashes)
