"""What every benchmark shares: child processes, a private key prefix, ports, memory, the machine.

- :func:`processes` and :func:`isolated` give a benchmark its
  :class:`~server.devtools.processes.Processes` (shared with the tests), stopped at the end.
- :func:`bench_settings` gives a benchmark its own ``KEY_PREFIX``;
  :func:`delete_prefixed` deletes exactly the keys carrying it (never a FLUSH).
- :func:`private_redis` starts a redis-server of our own on a loopback port for the
  figures a shared Redis would blur (command counts, ``used_memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil
import redis
from redis.asyncio import Redis

from server.devtools.embedded import LOCAL_REDIS, redis_server_binary
from server.devtools.processes import Processes, delete_prefixed, free_port
from server.settings import Settings, new_webhook_secret

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: the rate limits a benchmark's load would trip (all of it comes from 127.0.0.1). Not 100000000/1:
#: an interval under the float resolution of epoch seconds makes the GCRA script SET PX 0.
UNLIMITED = (1_000_000, 1.0)


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or LOCAL_REDIS


def raise_fd_limit() -> int:
    """Soft open-files limit up to the hard one (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def bench_settings(url: str | None = None, **changes: Any) -> Settings:
    """Settings for one benchmark: a fresh key prefix (``b<hex>_``), fresh secrets, no rate limits."""
    settings = Settings(
        secret_key=secrets.token_urlsafe(32),
        webhook_secrets=(new_webhook_secret(),),
        redis_url=url or redis_url(),
        key_prefix=f"b{secrets.token_hex(4)}_",
        create_rate=UNLIMITED,
        create_rate_per_address=UNLIMITED,
        poll_rate_per_address=UNLIMITED,
        log_format="json",
        log_level="INFO",
    )
    return settings.with_(**changes)


async def cleanup(settings: Settings) -> None:
    client = Redis.from_url(settings.redis_url)
    try:
        await delete_prefixed(client, settings.key_prefix)
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def processes(name: str) -> Iterator[Processes]:
    """A :class:`Processes` whose logs live in a temporary directory; on failure they are printed."""
    log_dir = Path(tempfile.mkdtemp(prefix=f"longrun-bench-{name}-"))
    procs = Processes(log_dir)
    try:
        yield procs
    except BaseException:
        print(procs.logs(), file=sys.stderr)
        raise
    finally:
        killed = procs.stop_all()
        if killed:
            print(f"bench {name}: had to SIGKILL {killed}", file=sys.stderr)
        shutil.rmtree(log_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def isolated(name: str, settings: Settings) -> AsyncIterator[Processes]:
    """The processes of one benchmark; at the end they are stopped first, and only then are
    the benchmark's keys deleted (a live worker or server could write more)."""
    try:
        with processes(name) as procs:
            yield procs
    finally:
        await cleanup(settings)


def _exists(path: Path) -> bool:
    return path.exists()  # a local stat: not worth a thread


async def wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    """Until another process has written ``path`` (or it died, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not _exists(path):
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout:.0f} s")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- private Redis


@contextlib.contextmanager
def private_redis(procs: Processes) -> Iterator[str]:
    """A redis-server of our own (the machine's binary when there is one), for exact counts."""
    binary = shutil.which("redis-server") or redis_server_binary()
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="longrun-bench-redis-"))
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = procs.start("redis", [*args, "--dir", str(directory)], python=False)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if redis.Redis.from_url(url, socket_timeout=0.2).ping():
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"private redis-server ({binary}) did not start")
            time.sleep(0.05)
        yield url
    finally:
        procs.stop(proc)
        shutil.rmtree(directory, ignore_errors=True)


# --------------------------------------------------------------------------- memory


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (a supervisor's workers, RQ's work horses)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def rss(pid: int, *, children: bool = False) -> int:
    """Resident bytes of a process (with ``children``: of its whole tree)."""
    total = 0
    for p in tree(pid) if children else [psutil.Process(pid)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += p.memory_info().rss
    return total


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU seconds used so far by a process and, by default, its descendants,
    living or reaped (RQ's work horses live for one job each)."""
    total = 0.0
    for p in tree(pid) if children else [psutil.Process(pid)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
            if children:
                total += t.children_user + t.children_system
    return total


def redis_pid(url: str) -> int | None:
    """The redis-server's process id when it runs on this machine (loopback), else None."""
    try:
        info = redis.Redis.from_url(url, socket_timeout=2).info("server")
    except (redis.RedisError, OSError):
        return None
    pid = info.get("process_id")
    return int(pid) if isinstance(pid, int) and psutil.pid_exists(pid) else None


def pss(pid: int) -> int:
    """Proportional set size of a process tree: shared pages (fork) counted once overall."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += getattr(p.memory_full_info(), "pss", 0)
    return total


# --------------------------------------------------------------------------- figures


def best_of(
    runs: Sequence[dict[str, Any]], *, complete: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, Any]:
    """The run to report of several runs of one measurement: the fastest (``requests_per_s``)
    of those that did all their work (``complete``, when given)."""
    return max(runs, key=lambda run: (complete is None or complete(run), run["requests_per_s"]))


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class Row:
    """One line of the results table."""

    what: str
    how: str
    ours: str
    peer: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: bool | None = None
    #: by how much a missed target is missed, or anything the reader must know
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Result:
    """What a benchmark returns: its raw figures and its table rows."""

    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def show(self) -> Result:
        """Its rows, then every figure as JSON (what a benchmark module run alone shows)."""
        for row in self.rows:
            print(row)
        print(orjson.dumps(self.figures, option=orjson.OPT_INDENT_2).decode())
        return self


def machine() -> dict[str, Any]:
    """CPU, cores, memory, kernel, Python, Redis and library versions of this run."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        info = redis.Redis.from_url(redis_url(), socket_timeout=2).info("server")
        redis_version = str(info.get("redis_version"))
    except (redis.RedisError, OSError):
        redis_version = "unreachable"
    versions = {}
    for dist in ("aiohttp", "redis", "hiredis", "rq", "python-socketio", "python-engineio", "orjson"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        commit = head.stdout.strip()
        changed = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        ).stdout
        if commit and changed.strip():
            commit += " with uncommitted changes"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": redis_version,
        "libraries": versions,
        "commit": commit,
        "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
