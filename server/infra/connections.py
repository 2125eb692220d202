"""Every Redis client a Longrun process opens, made here: standalone or Redis Cluster.

With ``REDIS_CLUSTER=1`` the records, scripts and channels spread over the
cluster (each request's keys and shard channel share one hash slot, see
``server.record``), while RQ — whose worker needs a plain connection — lives on
the node that owns the ``{rq}`` hash slot: every RQ key carries that tag
because ``RQ_KEY_PREFIX={rq}`` (checked at start-up by ``Settings``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster as SyncRedisCluster

from server.settings import Settings

#: connections one async client opens to a standalone Redis before callers queue for one
MAX_CONNECTIONS = 100

#: the client type the server, jobs and SDK use (a cluster client has the same commands)
AsyncClient = Redis | RedisCluster


def async_client(settings: Settings, *, fail_fast: bool = False, **options: Any) -> AsyncClient:
    """An asyncio client. ``fail_fast`` (the web server): short timeouts, two quick retries."""
    if fail_fast:
        options.setdefault("socket_connect_timeout", 1.0)
        options.setdefault("socket_timeout", 2.0)
        options.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2))
    else:
        options.setdefault("socket_connect_timeout", 5.0)
        options.setdefault("socket_timeout", 10.0)
        # A connection the pool kept across a Redis restart answers its first command with
        # "closed by server": that command is sent again on a fresh connection. Without it a
        # worker's job met the stale connections one after the other, and a request made after
        # the restart failed all its attempts (test_faults, Redis stopped for 5 s).
        options.setdefault("retry", Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3))
    if settings.redis_cluster:
        options.pop("health_check_interval", None)
        options.pop("max_connections", None)
        return RedisCluster.from_url(settings.redis_url, **options)
    # At most MAX_CONNECTIONS per client; a caller past that waits (bounded) for one to
    # come free instead of failing at once (redis-py's default pool raises).
    options.setdefault("max_connections", MAX_CONNECTIONS)
    options.setdefault("timeout", 2.0 if fail_fast else 10.0)
    client = Redis(connection_pool=BlockingConnectionPool.from_url(settings.redis_url, **options))
    client.auto_close_connection_pool = True  # what from_url does: aclose() closes the pool too
    return client


def pubsub_client(settings: Settings, name: str) -> AsyncClient:
    """The hub's client: no silent reconnects (the hub must notice a drop to resync).

    A retry policy that catches no error: redis-py's pub/sub calls the policy's failure
    handler, which reconnects and resubscribes, even with ``retries=0`` before it raises, so
    a dropped connection came back at once behind the hub's back (and outside its backoff).
    """
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "retry": Retry(NoBackoff(), 0, supported_errors=())}
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    return Redis.from_url(settings.redis_url, health_check_interval=10, client_name=name, **options)


def rq_connection(settings: Settings, **options: Any) -> redis.Redis:
    """A synchronous connection for RQ (enqueueing and workers)."""
    if settings.redis_cluster:
        with SyncRedisCluster.from_url(settings.redis_url) as cluster:
            node = cluster.get_node_from_key("{rq}")
            if node is None:
                raise redis.ConnectionError("no cluster node owns the {rq} slot")
            return redis.Redis(host=node.host, port=node.port, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


async def mget(client: AsyncClient, keys: Sequence[str]) -> list[Any]:
    """MGET, split by slot in a cluster (keys of different requests live on different nodes)."""
    if not keys:
        return []
    if isinstance(client, RedisCluster):
        return list(await client.mget_nonatomic(list(keys)))
    return list(await client.mget(list(keys)))
