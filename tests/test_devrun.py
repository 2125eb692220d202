"""``make run`` (server/devrun.py) prints the URL to open only once the web answers
``/readyz``, the way a load balancer decides to send people to it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from server.devtools import devrun
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


def test_make_run_adds_the_demo_host_app_with_its_key_digest_and_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devrun, "RUN_DIR", tmp_path)
    env: dict[str, str] = {}
    procfile = devrun.with_hostapp(env, "8080", "8090")
    key = (tmp_path / "hostapp.key").read_text().strip()
    settings = Settings.from_env({**env, "LONGRUN_ENV": "dev"})
    assert key.startswith("lrk_") and key not in env["APP_API_KEYS"]
    assert [app for app, _ in settings.app_api_keys] == ["hostapp"] and settings.embed_origins == (
        "http://localhost:8090",
    )
    assert (tmp_path / "hostapp.key").stat().st_mode & 0o077 == 0
    lines = procfile.read_text().splitlines()
    assert lines[: len(lines) - 1] == (devrun.ROOT / "Procfile").read_text().splitlines()
    assert lines[-1].startswith(
        "hostapp: python -m server.devtools.hostapp --port 8090 --longrun http://127.0.0.1:8080"
    )
    assert devrun.hostapp_key() == key  # made once, kept
