"""What a job needs while it runs: settings, Redis, the record store, the bot client.

RQ forks a work horse per job, so each job opens its own async clients and
closes them when done; settings are read once per worker process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache

import aiohttp
from redis import Redis as SyncRedis

from jobs.botclient import BotClient
from jobs.queues import Dispatcher
from server.connections import AsyncClient, async_client, rq_connection
from server.lifecycle import Lifecycle
from server.record import Keys, RecordStore
from server.settings import Settings


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

    @classmethod
    @asynccontextmanager
    async def open(cls, config: Settings, sync_connection: SyncRedis | None = None) -> AsyncIterator[JobContext]:
        redis = async_client(config)
        connection = sync_connection or rq_connection(config)
        dispatcher = Dispatcher(connection, config)
        store = RecordStore(redis, Keys(config.key_prefix), ttl=config.request_ttl, sharded=config.redis_cluster)

        life = Lifecycle.for_settings(store, config, dispatcher)
        try:
            async with aiohttp.ClientSession() as session:
                bot = BotClient(session, config.bot_api_url, max_timeout=config.bot_api_timeout)
                yield cls(config, redis, store, life, bot, dispatcher)
        finally:
            await redis.aclose()
            if sync_connection is None:
                connection.close()
