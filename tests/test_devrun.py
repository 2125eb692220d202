"""``make run`` (server/devrun.py) prints the URL to open only once the web answers
``/readyz``, the way a load balancer decides to send people to it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.devtools.devrun import procfile_names, wait_ready
from server.devtools.embedded import EmbeddedRedis
from server.devtools.processes import ROOT, Processes
from server.settings import Settings
from tests.helpers import wait_for


async def test_waits_for_readyz_and_gives_up_when_the_processes_exit(
    make_client: Any, settings: Settings, processes: Processes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    try:
        web = await make_client(settings.with_(redis_url=redis.url))
        readyz = str(web.make_url("/readyz"))
        redis.stop()  # the web answers, but is not ready
        assert (await web.get("/readyz")).status == 503
        honcho = processes.start("honcho", ["-c", "import time; time.sleep(120)"], {})  # stands in for honcho
        waiting = asyncio.ensure_future(asyncio.to_thread(wait_ready, honcho, readyz, every=0.1, note_after=0.5))
        said = ""

        async def still_waiting() -> bool:
            nonlocal said
            said += capsys.readouterr().out
            return "Still waiting for" in said

        await wait_for(still_waiting, what="wait_ready to say what it waits for")
        assert readyz in said and "HTTP 503" in said and "redis" in said
        assert not waiting.done()
        redis = EmbeddedRedis(redis.directory, port=redis.port)
        redis.start()
        assert await asyncio.wait_for(waiting, 20) is True

        redis.stop()  # not ready again, and now the processes stop: no URL, no endless wait
        processes.stop(honcho)
        assert await asyncio.wait_for(asyncio.to_thread(wait_ready, honcho, readyz, every=0.1), 20) is False
    finally:
        redis.stop()


def test_make_run_starts_the_node_demo_bot_where_node_is_there() -> None:
    procfile = ROOT / "Procfile"
    everything = procfile_names(procfile, node_ready=True)
    assert {"web", "worker", "bots", "nodebot", "archiver", "cron"} <= set(everything)
    assert procfile_names(procfile, node_ready=False) == [n for n in everything if n != "nodebot"]
