"""The request record: its Redis layout, its Lua scripts and the store that runs them.

This package owns every key name, TTL and script (``keys``, ``lua`` with the
``.lua`` files in ``scripts/``, ``model``, ``store``). The server, the RQ jobs,
the archiver and the bot SDK all go through it; it imports nothing from
aiohttp.

Layout (``P`` is ``Settings.key_prefix``, empty in production)::

    P local_request:{hash}              string  the record JSON, TTL request_ttl
    P local_request_updates:{hash}      channel the public record after every change
    P local_requests_list               list    recent hashes (pruned of expired ones)
    {P local_request:{hash}}:otp        string  the person's pending answer (a code, or {id, value}), read once (GETDEL)
    {P local_request:{hash}}:log        list    the published records, oldest first, at least the last
                                                LOG_MAX; TTL the record's (set by the same script)
    P longrun:archive:{lrN}             stream  terminal records for the archiver (group ARCHIVE_GROUP)
    P longrun:archiver                  hash    archiver progress: last_archived_at, archived, ...
    P longrun:estimate:{slug}           string  learned duration of a service (JSON), TTL ESTIMATE_TTL
    P longrun:inflight:{lrN}            zset    running hashes by the time they are due
    P longrun:counts:{lrN}              hash    unfinished requests by "status|service"
    P longrun:otpwait:{lrN}             zset    hashes waiting for the person (code or other prompt), by since when
    P longrun:app:{app}:requests        zset    an app's requests by creation time (µs), for listing
    P longrun:app:{app}:user:{user_id}  zset    the same for one of the app's users
    P longrun:rl:{name}:{who}           string  GCRA state of one rate limit
    P longrun:hook:{id}                 string  a bot event id already applied
    P longrun:lock:{name}               string  a lock held by one process at a time (the sweeper)
    P longrun:stats:jobs                hash    jobs by "queue|phase|outcome" (monotonic counters)
    P longrun:stats:minute:{epoch min}  hash    per-minute figures for the dashboard, TTL STATS_TTL
    P longrun:stats:runtimes:{queue}    list    the last RUNTIME_SAMPLES job runtimes (seconds)
    P longrun:stats:sockets             hash    open sockets per web process ("host:pid" → "n at")
    P longrun:alerts                    set     queues whose oldest job waits past the threshold

Cluster-ready: a request's side keys carry the record's key name as their
hash tag, and request hashes are minted so that the record key falls into
the slot of one of ``SHARDS`` shard tags (``lr0`` … ``lr15``). Every script
therefore touches one hash slot only, while ``local_request:{hash}`` stays the
plain key that existing bots GET and SETEX.

Private fields live under ``_p`` in the stored JSON (owner token hash,
timings, OTP counters); every published or served copy drops them.
"""

from server.record.keys import (
    ARCHIVE_GROUP,
    ESTIMATE_TTL,
    LOG_MAX,
    LOG_SLACK,
    OTP_EXPIRY_GRACE,
    REQUEST_TTL,
    RUNTIME_SAMPLES,
    SHARD_TAGS,
    SHARDS,
    STATS_TTL,
    TRACKING_LIST_MAX,
    WEBHOOK_ID_TTL,
    Keys,
    key_slot,
    token_digest,
)
from server.record.lua import (
    _PRELUDE,
    ACK_ARCHIVED_SCRIPT,
    ADOPT_TERMINAL_SCRIPT,
    CREATE_SCRIPT,
    RATE_LIMIT_SCRIPT,
    READ_LOG_SCRIPT,
    RELEASE_LOCK_SCRIPT,
    RESEND_OTP_SCRIPT,
    REVIVE_SCRIPT,
    SUBMIT_ANSWER_SCRIPT,
    UPDATE_SCRIPT,
)
from server.record.model import (
    dumps,
    is_terminal,
    loads_record,
    new_record,
    private_view,
    public_json,
    public_view,
    text,
)
from server.record.store import LogRead, RecordStore, ScriptAnswer, UpdateResult

__all__ = [
    "ACK_ARCHIVED_SCRIPT",
    "ADOPT_TERMINAL_SCRIPT",
    "ARCHIVE_GROUP",
    "CREATE_SCRIPT",
    "ESTIMATE_TTL",
    "LOG_MAX",
    "LOG_SLACK",
    "OTP_EXPIRY_GRACE",
    "RATE_LIMIT_SCRIPT",
    "READ_LOG_SCRIPT",
    "RELEASE_LOCK_SCRIPT",
    "REQUEST_TTL",
    "RESEND_OTP_SCRIPT",
    "REVIVE_SCRIPT",
    "RUNTIME_SAMPLES",
    "SHARDS",
    "SHARD_TAGS",
    "STATS_TTL",
    "SUBMIT_ANSWER_SCRIPT",
    "TRACKING_LIST_MAX",
    "UPDATE_SCRIPT",
    "WEBHOOK_ID_TTL",
    "_PRELUDE",
    "Keys",
    "LogRead",
    "RecordStore",
    "ScriptAnswer",
    "UpdateResult",
    "dumps",
    "is_terminal",
    "key_slot",
    "loads_record",
    "new_record",
    "private_view",
    "public_json",
    "public_view",
    "text",
    "token_digest",
]
