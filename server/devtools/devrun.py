"""``make run``: bring the whole system up on this machine.

Finds Redis (``REDIS_URL``, else 127.0.0.1:6379, else an embedded one under
``.run/``) and PostgreSQL (``DATABASE_URL``, else pgserver's under ``.run/pg``, its
data kept across runs), keeps dev secrets in ``.run/dev.env`` so every process and every
restart agrees on them, runs the ``Procfile`` with honcho, and prints the URL to
open once the web answers ``/readyz`` (the way a load balancer would decide to send
people to it). Ctrl-C stops everything it started.

Beside the ``Procfile`` it runs the demo host app (``server.devtools.hostapp``) on a second
origin, http://localhost:8090 (``HOSTAPP_PORT``): an application that embeds Longrun with
an API key kept in ``.run/hostapp.key`` (made once; Longrun gets only its digest through
``APP_API_KEYS``) and is listed in ``EMBED_ORIGINS``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from server.devtools.embedded import find_or_start_postgres, find_or_start_redis
from server.requests.credentials import digest
from server.settings import new_app_key, new_webhook_secret

ROOT = Path(__file__).resolve().parent.parent.parent
RUN_DIR = ROOT / ".run"


#: honcho's status when what it ran was ended by SIGINT or SIGTERM (negative: killed by it)
STOPPED_BY_SIGNAL = frozenset({0, 130, 143, -2, -15})


def dev_secrets() -> dict[str, str]:
    """SECRET_KEY, BOT_WEBHOOK_SECRET and OPERATOR_PASSWORD for dev mode, made once and kept
    in .run/dev.env."""
    import secrets

    path = RUN_DIR / "dev.env"
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key and value:
                values[key.strip()] = value.strip()
    changed = False
    if "SECRET_KEY" not in values:
        values["SECRET_KEY"] = secrets.token_urlsafe(32)
        changed = True
    if "BOT_WEBHOOK_SECRET" not in values:
        values["BOT_WEBHOOK_SECRET"] = new_webhook_secret()
        changed = True
    if "OPERATOR_PASSWORD" not in values:
        values["OPERATOR_PASSWORD"] = secrets.token_urlsafe(9)
        changed = True
    if changed:
        RUN_DIR.mkdir(exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        path.chmod(0o600)
    return values


def procfile_names(procfile: Path, node_ready: bool) -> list[str]:
    """The Procfile's processes to start: all of them, but the Node demo bot only where Node and
    the SDK's packages are installed (``make run`` installs both; a bare ``python -m
    server.devtools.devrun`` may run without them)."""
    names = [line.split(":", 1)[0].strip() for line in procfile.read_text().splitlines() if ":" in line]
    return names if node_ready else [n for n in names if n != "nodebot"]


def node_ready() -> bool:
    return shutil.which("node") is not None and (ROOT / "bots" / "js" / "node_modules" / "ioredis").is_dir()


def hostapp_key() -> str:
    """The demo host app's API key, made once and kept in .run/hostapp.key (0600)."""
    path = RUN_DIR / "hostapp.key"
    if not path.exists():
        RUN_DIR.mkdir(exist_ok=True)
        path.write_text(new_app_key() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def with_hostapp(env: dict[str, str], port: str, host_port: str) -> Path:
    """Let Longrun know the demo host app (its key's digest, its origin) and write the
    Procfile honcho runs: ours plus the host app."""
    origin = f"http://localhost:{host_port}"
    env.setdefault("APP_API_KEYS", f"hostapp:sha256:{digest(hostapp_key())}")
    env.setdefault("EMBED_ORIGINS", origin)
    procfile = RUN_DIR / "Procfile"
    procfile.write_text(
        (ROOT / "Procfile").read_text().rstrip("\n")
        + f"\nhostapp: python -m server.devtools.hostapp --port {int(host_port)} "
        f"--longrun http://127.0.0.1:{int(port)} --key-file {RUN_DIR / 'hostapp.key'}\n"
    )
    return procfile


def wait_ready(proc: subprocess.Popen[bytes], url: str, *, every: float = 0.25, note_after: float = 20.0) -> bool:
    """Poll the web's ``/readyz`` until it answers 200: True then, False if ``proc`` (honcho)
    exits first. Says once what it is still waiting for when that takes long."""
    started = time.monotonic()
    noted = False
    last = "no answer yet"
    while proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return True
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as exc:  # 503: up, but Redis or PostgreSQL is not
            last = f"HTTP {exc.code}: {exc.read(300).decode(errors='replace')}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if not noted and time.monotonic() - started > note_after:
            print(f"\n  Still waiting for {url} ({last})\n", flush=True)
            noted = True
        time.sleep(every)
    return False


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.setdefault("LONGRUN_ENV", "dev")
    for key, value in dev_secrets().items():
        env.setdefault(key, value)
    redis_url, embedded_redis = find_or_start_redis(RUN_DIR, env)
    env["REDIS_URL"] = redis_url
    try:
        database_url, embedded_pg = find_or_start_postgres(RUN_DIR, env)
    except BaseException:
        if embedded_redis is not None:
            embedded_redis.stop()
        raise
    env["DATABASE_URL"] = database_url
    port = env.setdefault("PORT", "8080")
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The Procfile says `python`: make that the interpreter running this (the venv's).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    where = "embedded, under .run/redis" if embedded_redis else "external"
    pg_where = "embedded, under .run/pg" if embedded_pg else "external"
    print(
        f"\n  Longrun is starting\n  Redis: {redis_url} ({where})\n  PostgreSQL: {database_url} ({pg_where})\n",
        flush=True,
    )
    host_port = env.pop("HOSTAPP_PORT", "8090")
    procfile = with_hostapp(env, port, host_port)
    honcho = Path(sys.executable).with_name("honcho")
    with_node = node_ready()
    if not with_node:
        print("  Not starting the Node.js demo bot (parcel-tracking): run `make node-deps` first\n", flush=True)
    names = procfile_names(procfile, with_node)
    proc = subprocess.Popen([str(honcho), "start", "-f", str(procfile), "-d", str(ROOT), *names], env=env)

    stopping = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        # Ctrl-C in a terminal reaches honcho too; a plain `kill` reaches only us. Either
        # way honcho stops everything it started (once), then we stop the embedded servers.
        stopping.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        if wait_ready(proc, f"http://127.0.0.1:{port}/readyz"):
            print(
                f"\n  Longrun is ready: open http://127.0.0.1:{port}/\n"
                f"  Operator dashboard: http://127.0.0.1:{port}/dashboard (password in .run/dev.env: "
                f"{env.get('OPERATOR_PASSWORD', '')})\n"
                f"  Demo host app embedding Longrun (another origin): http://localhost:{host_port}/\n",
                flush=True,
            )
        code = proc.wait()
        # Asked to stop, honcho answers with the status of processes it ended by a signal (143),
        # which make would print as an error after a plain Ctrl-C; any other status is kept.
        return 0 if stopping.is_set() and code in STOPPED_BY_SIGNAL else code
    finally:
        if embedded_redis is not None:
            embedded_redis.stop()
        if embedded_pg is not None:
            embedded_pg.stop()


if __name__ == "__main__":
    sys.exit(main())
