"""``python -m server``: the web process (HTTP API, pages, WebSocket hub).

With ``WEB_CONCURRENCY=N`` (N > 1) this process becomes a small supervisor:
it forks N servers that share the port through ``SO_REUSEPORT`` (the kernel
spreads connections across them), restarts any that dies, and passes SIGTERM
on so each closes its sockets with 1001. Prometheus' multiprocess mode sums
their counters, so ``/metrics`` on any of them reports the whole tier.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator

from server.infra import logs
from server.settings import Settings


def serve(settings: Settings) -> None:
    """Run one web server in this process (imports the app only now: see ``supervise``)."""
    import uvloop
    from aiohttp import web

    from server.web.app import create_app

    logs.configure(settings)
    app = create_app(settings)
    app.on_startup.insert(0, _stop_on_first_signal)  # first: a stop during start-up too
    app.on_startup.append(_freeze_startup_objects)
    app.cleanup_ctx.append(_collector_schedule)
    web.run_app(
        app,
        loop=uvloop.new_event_loop(),  # libuv's loop: about 1.3x the requests/s of asyncio's here
        host=settings.host,
        port=settings.port,
        reuse_port=True,
        shutdown_timeout=10,
        access_log=None,
        print=None,
        handle_signals=False,  # ours, below
    )


async def _stop_on_first_signal(_: object) -> None:
    """SIGINT or SIGTERM stops the server once; a second signal lets that stop finish.

    aiohttp's own handlers raise GracefulExit on every signal until the stop is over, and a
    second one (Ctrl-C in a terminal reaches ``make run``'s supervisor and this process
    both, and the supervisor then sends SIGTERM) cut the shutdown short: sockets not told
    to reconnect, the dashboard's process entry left behind, exit status 1. The stop is
    bounded anyway (``shutdown_timeout``; SIGKILL remains for a stuck one)."""
    import asyncio
    import logging

    from aiohttp import web

    loop = asyncio.get_running_loop()

    def already_stopping() -> None:
        logging.getLogger("longrun.web").info("a second stop signal: the stop under way goes on")

    def stop() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, already_stopping)
        raise web.GracefulExit()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def _freeze_startup_objects(_: object) -> None:
    """Leave what start-up made (modules, routes, templates: ~95k objects) out of every
    later full garbage collection, whose pauses grow with what they walk and show up
    as the p99 of socket updates; and collect the young generation less often."""
    from server.infra.collector import raise_young_threshold

    gc.collect()
    gc.freeze()
    raise_young_threshold()


async def _collector_schedule(_: object) -> AsyncIterator[None]:
    """What sockets and streams made since start-up is frozen too, on a schedule (see
    ``server.infra.collector``): no collection pause grows with the sockets a process holds."""
    import asyncio

    from server.infra.collector import CollectorSchedule, PauseLog

    pauses = PauseLog()
    pauses.install()
    stop = asyncio.Event()
    task = asyncio.create_task(CollectorSchedule(pauses=pauses).run(stop), name="gc-schedule")
    yield
    stop.set()
    await task
    pauses.uninstall()


def supervise(settings: Settings) -> int:
    # Must be set before prometheus_client is first imported (by the children, after fork).
    metrics_dir = tempfile.mkdtemp(prefix="longrun-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                serve(settings)
            except BaseException:
                code = 1
            os._exit(code)
        children.add(pid)

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(settings.web_concurrency):
        spawn()
    print(f"longrun: {settings.web_concurrency} web processes on port {settings.port}", flush=True)
    restarts: list[float] = []
    while children:
        try:
            pid, _status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
        if not stopping:
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 10:
                print("longrun: web processes keep dying; giving up", file=sys.stderr)
                stop(signal.SIGTERM, None)
                continue
            spawn()
    shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main() -> int:
    settings = Settings.from_env_or_exit("longrun")
    for note in settings.extra.get("notes", ()):
        print(f"longrun: {note}", file=sys.stderr)
    if settings.web_concurrency > 1:
        return supervise(settings)
    serve(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
