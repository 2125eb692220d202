"""What a job needs while it runs: settings, Redis, the record store, the bot client.

Workers run jobs in their own process (RQ's ``SimpleWorker``, see
``jobs/worker.py``), one thread per job running at once, so one event loop,
one async Redis client, one HTTP session to the bot API and one RQ connection
serve every job of a thread: a job pays for its own work, not for setting up a
loop and four clients (that set-up, with a fork per job, was most of a job's
cost). :func:`run_job` is the one way in.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import os
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import aiohttp
import uvloop
from redis import Redis as SyncRedis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from jobs.botclient import BotClient
from server.infra.connections import AsyncClient, async_client, rq_connection
from server.queue.dispatch import Dispatcher
from server.record import Keys, RecordStore
from server.requests.lifecycle import Lifecycle
from server.settings import Settings

T = TypeVar("T")

#: a job's coroutine stops this long before RQ's own (signal-based) job timeout would fire,
#: so that it ends as a ``JobTimeoutException`` raised in the job, not a signal in the loop
TIMEOUT_MARGIN = 1.0


@cache
def settings() -> Settings:
    """The worker's settings, from its environment (read once per process; exits 2 naming
    what is missing, the first time)."""
    return Settings.from_env_or_exit("longrun")


@dataclass
class JobContext:
    settings: Settings
    redis: AsyncClient
    store: RecordStore
    life: Lifecycle
    bot: BotClient
    dispatcher: Dispatcher
    session: aiohttp.ClientSession
    connection: SyncRedis

    @classmethod
    def create(cls, config: Settings) -> JobContext:
        """The clients of one process; call inside its event loop (the HTTP session binds to it)."""
        redis = async_client(config)
        connection = rq_connection(config)
        dispatcher = Dispatcher(connection, config)
        store = RecordStore(redis, Keys(config.key_prefix), ttl=config.request_ttl, sharded=config.redis_cluster)
        life = Lifecycle.for_settings(store, config, dispatcher)
        session = aiohttp.ClientSession()
        bot = BotClient(session, config.bot_api_url, max_timeout=config.bot_api_timeout, routes=config.bot_api_urls)
        return cls(config, redis, store, life, bot, dispatcher, session, connection)

    async def aclose(self) -> None:
        await self.session.close()
        await self.redis.aclose()
        self.connection.close()


class Runtime:
    """A thread's event loop and its :class:`JobContext`, made on first use."""

    def __init__(self, config: Settings):
        self.config = config
        self.pid = os.getpid()
        self.runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        self.context: JobContext | None = None

    def run(self, work: Callable[[JobContext], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        # In the caller's context, not the runner's (a copy of the first caller's): RQ keeps
        # the current job in a ContextVar, and the job's code asks for it.
        return self.runner.run(self._call(work, timeout), context=contextvars.copy_context())

    async def _call(self, work: Callable[[JobContext], Coroutine[Any, Any, T]], timeout: float | None) -> T:
        if self.context is None:
            self.context = JobContext.create(self.config)
        try:
            async with asyncio.timeout(timeout):
                return await work(self.context)
        except TimeoutError as exc:
            raise JobTimeoutException(f"the job ran past its {timeout:.0f} s") from exc

    def close(self) -> None:
        if os.getpid() != self.pid:
            return  # a forked copy: the sockets are the parent's
        if self.context is not None:
            self.runner.run(self.context.aclose())
            self.context = None
        self.runner.close()


_local = threading.local()


def runtime() -> Runtime:
    """This thread's runtime (a worker runs a job per thread, each thread's jobs on its own loop;
    a forked child makes its own: loops and sockets do not survive fork)."""
    current: Runtime | None = getattr(_local, "runtime", None)
    if current is None or current.pid != os.getpid():
        current = _local.runtime = Runtime(settings())
        atexit.register(current.close)
    return current


def run_job(work: Callable[[JobContext], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(ctx)`` to the end on this process's loop, within the current RQ job's timeout."""
    job = get_current_job()
    timeout = None
    if job is not None and job.timeout is not None and float(job.timeout) > 0:
        timeout = max(1.0, float(job.timeout) - TIMEOUT_MARGIN)
    return runtime().run(work, timeout)
