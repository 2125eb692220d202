"""Child processes on one machine, shared by the tests and the benchmarks.

- :class:`Processes` starts each server, worker pool or load generator as its own
  process (its own session, output to a log file) and stops them all at the end:
  SIGTERM, a second SIGTERM after a grace (RQ's cold shutdown), SIGKILL last.
- :func:`free_port`, :func:`wait_http` (and :func:`wait_http_sync`) for servers on
  loopback ports.
- :func:`delete_prefixed` deletes exactly the Redis keys of one test or benchmark
  (never a FLUSH: others share the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON at ``path``, all at once (a parent waiting for the file never reads half)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(value))
    tmp.rename(path)


async def delete_prefixed(client: Redis, prefix: str) -> int:
    """Delete every key carrying ``prefix`` (records, side keys, RQ jobs and queues); returns how many."""
    keys = [k async for k in client.scan_iter(match=f"*{prefix}*", count=2000)]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i : i + 500])
    # RQ's global index sets hold our queue and rate-limit names as members.
    for index in ("rq:queues", "rq:rl-keys"):
        members = [m for m in await client.smembers(index) if prefix.encode() in m]
        if members:
            await client.srem(index, *members)
    return len(keys)


def _describe(proc: subprocess.Popen[bytes]) -> str:
    return " ".join(str(a) for a in proc.args)  # type: ignore[union-attr]


async def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """Until ``url`` answers 200; raises when ``proc`` exits first or after ``timeout``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{_describe(proc)} exited with {proc.returncode} at start")
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def wait_http_sync(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30.0) -> None:
    """:func:`wait_http` for callers without an event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{_describe(proc)} exited with {proc.returncode} at start")
        with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


class Processes:
    """Child processes of one test or benchmark, stopped when it ends (see :meth:`stop_all`)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log_paths: dict[int, Path] = {}

    def start(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None, *, python: bool = True
    ) -> subprocess.Popen[bytes]:
        """``python args…`` (or ``args`` as given, with ``python=False``) in its own session,
        from the repository's root, its output in ``{n}-{name}.log``."""
        path = self.log_dir / f"{len(self.procs):02d}-{name}.log"
        log = open(path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, *args] if python else list(args),
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        self.log_paths[proc.pid] = path
        return proc

    # ----------------------------------------------------------------- Longrun's own processes

    def workers(
        self, settings: Settings, count: int = 1, jobs: int | None = None, **env: str
    ) -> subprocess.Popen[bytes]:
        """A pool of ``count`` RQ workers on the settings' queues, each running ``jobs`` jobs at once
        (``jobs.worker``'s default when None)."""
        args = ["-m", "jobs.worker", "--workers", str(count)] + ([] if jobs is None else ["--jobs", str(jobs)])
        return self.start("worker", args, {**settings.to_env(), **env})

    def archiver(self, settings: Settings, *args: str) -> subprocess.Popen[bytes]:
        return self.start("archiver", ["-m", "jobs.archiver", *args], settings.to_env())

    def web(self, settings: Settings, web_processes: int = 1, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        """``python -m server`` on a free port (``WEB_CONCURRENCY``); the process and its base URL."""
        port = free_port()
        environment = {
            **settings.with_(port=port, public_url=f"http://127.0.0.1:{port}").to_env(),
            "WEB_CONCURRENCY": str(web_processes),
            **env,
        }
        return self.start(f"web{web_processes}", ["-m", "server"], environment), f"http://127.0.0.1:{port}"

    def node_bot(self, settings: Settings, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        """The Node.js demo bot (``bots/js/demo``, parcel-tracking) on a free port, reporting the
        way the settings say (``BOT_REPORT_MODE``); the process and its base URL."""
        port = free_port()
        environment = {**settings.to_env(), "NODE_BOT_PORT": str(port), **env}
        proc = self.start("nodebot", ["node", "bots/js/demo/server.js"], environment, python=False)
        return proc, f"http://127.0.0.1:{port}"

    # ----------------------------------------------------------------- output

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        """What a process wrote (stdout and stderr) so far."""
        return self.log_paths[proc.pid].read_text(errors="replace")

    def logs(self, tail: int | None = 4000) -> str:
        """Every child's output under its name (the last ``tail`` characters each; all with None)."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"---- {path.name}\n{text if tail is None else text[-tail:]}")
        return "\n".join(parts)

    def check_alive(self, *procs: subprocess.Popen[bytes]) -> None:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{_describe(proc)} exited with {proc.returncode}\n{self.logs()}")

    # ----------------------------------------------------------------- stopping

    def _signal_all(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal one process's group; SIGKILL it if it has not exited within ``timeout``."""
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self, timeout: float = 10.0, grace: float = 1.0) -> list[str]:
        """SIGTERM everything at once; after ``grace``, SIGTERM again what is still up (a second
        SIGTERM is RQ's cold shutdown: a worker stops its current job instead of finishing it);
        SIGKILL what is left after ``timeout``. Names what had to be killed."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        end_of_grace = time.monotonic() + grace
        while time.monotonic() < end_of_grace and any(p.poll() is None for p in self.procs):
            time.sleep(0.02)
        self._signal_all(signal.SIGTERM)
        killed = []
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(_describe(proc))
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return killed
