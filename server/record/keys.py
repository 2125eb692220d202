"""Key names, TTLs and hash minting: where every piece of a request lives in Redis."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import string
from binascii import crc_hqx
from dataclasses import dataclass
from functools import cache

from server.settings import REQUEST_TTL as REQUEST_TTL  # declared once, with the setting

TRACKING_LIST_MAX = 10_000
SHARDS = 16
SHARD_TAGS: tuple[str, ...] = tuple(f"lr{i}" for i in range(SHARDS))
#: Seconds the in-flight index waits past an OTP's expiry before the sweeper acts.
OTP_EXPIRY_GRACE = 5.0
#: Seconds a bot event id is remembered (the signature window is ±5 minutes).
WEBHOOK_ID_TTL = 600
#: Seconds per-minute statistics are kept (the dashboard charts the last hour).
STATS_TTL = 2 * 3600
RUNTIME_SAMPLES = 500
#: Records an archive stream keeps at most (per shard, so 16 times this in all) when the
#: archiver cannot keep up for a very long time; beyond it the oldest are dropped.
ARCHIVE_STREAM_MAX = 100_000
#: The consumer group the archiver reads the archive streams with.
ARCHIVE_GROUP = "archiver"
#: An app's request index keeps entries this many record lifetimes (records outlive their
#: creation by REQUEST_TTL after their last change; listing drops the ones already gone).
APP_INDEX_LIFETIMES = 4
#: Seconds an app's index entry waits for its record (the entry is added first) before a listing
#: that finds no record drops it: a listing in between must not drop a request being created.
APP_INDEX_GRACE = 60
#: Seconds a learned estimate stays cached; the archiver refreshes it long before.
ESTIMATE_TTL = 24 * 3600
#: Changes a request's log keeps (the newest; DESIGN.md asks for at least 100): how far back a
#: reconnecting page can resume without a gap.
LOG_MAX = 100
#: Changes a log may hold beyond LOG_MAX before it is trimmed back to LOG_MAX: one trim per this
#: many updates rather than one each (a trim moves the rest of the list's first node).
LOG_SLACK = 28

_SLOT_MASK = 0x3FFF
_ALPHABET = string.ascii_letters + string.digits + "-_"
_SHARD_SLOTS = tuple(crc_hqx(t.encode(), 0) & _SLOT_MASK for t in SHARD_TAGS)
_SLOT_TO_SHARD = {slot: i for i, slot in enumerate(_SHARD_SLOTS)}


def key_slot(key: str) -> int:
    """Redis Cluster's hash slot of a key (CRC16/XMODEM of the key or its hash tag)."""
    raw = key.encode()
    start = raw.find(b"{")
    if start != -1:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc_hqx(raw, 0) & _SLOT_MASK


@cache
def _suffix_table() -> dict[int, str]:
    # CRC16 is linear: crc(state, s) == crc(state, zeros) ^ crc(0, s). So a 3-character
    # suffix chosen from this table moves any key to any slot. Built once (~0.1 s).
    table: dict[int, str] = {}
    for chars in itertools.product(_ALPHABET, repeat=3):
        s = "".join(chars)
        table.setdefault(crc_hqx(s.encode(), 0) & _SLOT_MASK, s)
    return table


@dataclass(frozen=True)
class Keys:
    """Every Redis key and channel name Longrun uses."""

    prefix: str = ""

    def record(self, h: str) -> str:
        return f"{self.prefix}local_request:{h}"

    def channel(self, h: str) -> str:
        return f"{self.prefix}local_request_updates:{h}"

    def channel_prefix(self) -> str:
        return f"{self.prefix}local_request_updates:"

    def shard_channel(self, h: str) -> str:
        """The request's sharded pub/sub channel (Redis Cluster): its record key is the hash tag."""
        return "{" + self.record(h) + "}:updates"

    def hash_of_shard_channel(self, channel: str) -> str:
        head, tail = "{" + self.record(""), "}:updates"
        return channel[len(head) : -len(tail)] if channel.startswith(head) and channel.endswith(tail) else ""

    def tracking_list(self) -> str:
        return f"{self.prefix}local_requests_list"

    def otp(self, h: str) -> str:
        return "{" + self.record(h) + "}:otp"

    def log(self, h: str) -> str:
        """The request's recent changes: a list of the published records (public JSON), oldest first."""
        return "{" + self.record(h) + "}:log"

    def shard(self, h: str) -> int:
        """The shard a record lives in; hashes minted elsewhere fall back to shard 0."""
        return _SLOT_TO_SHARD.get(key_slot(self.record(h)), 0)

    def archive(self, shard: int) -> str:
        return f"{self.prefix}longrun:archive:{{{SHARD_TAGS[shard]}}}"

    def archiver_state(self) -> str:
        return f"{self.prefix}longrun:archiver"

    def estimate(self, slug: str) -> str:
        return f"{self.prefix}longrun:estimate:{slug}"

    def inflight(self, shard: int) -> str:
        return f"{self.prefix}longrun:inflight:{{{SHARD_TAGS[shard]}}}"

    def counts(self, shard: int) -> str:
        return f"{self.prefix}longrun:counts:{{{SHARD_TAGS[shard]}}}"

    def otp_waits(self, shard: int) -> str:
        return f"{self.prefix}longrun:otpwait:{{{SHARD_TAGS[shard]}}}"

    def app_requests(self, app: str) -> str:
        return f"{self.prefix}longrun:app:{app}:requests"

    def app_user_requests(self, app: str, user_id: str) -> str:
        return f"{self.prefix}longrun:app:{app}:user:{user_id}"

    def rate_limit(self, name: str, who: str) -> str:
        return f"{self.prefix}longrun:rl:{name}:{who}"

    def webhook_id(self, event_id: str) -> str:
        return f"{self.prefix}longrun:hook:{event_id}"

    def lock(self, name: str) -> str:
        return f"{self.prefix}longrun:lock:{name}"

    def job_stats(self) -> str:
        return f"{self.prefix}longrun:stats:jobs"

    def minute_stats(self, minute: int) -> str:
        return f"{self.prefix}longrun:stats:minute:{minute}"

    def runtimes(self, queue: str) -> str:
        return f"{self.prefix}longrun:stats:runtimes:{queue}"

    def socket_counts(self) -> str:
        return f"{self.prefix}longrun:stats:sockets"

    def alerts(self) -> str:
        return f"{self.prefix}longrun:alerts"

    def new_hash(self) -> str:
        """A fresh request hash: ``req_`` + 128 random bits + 3 characters that put the
        record key into the slot of a random shard tag."""
        body = "req_" + secrets.token_urlsafe(16)
        shard = secrets.randbelow(SHARDS)
        state = crc_hqx(self.record(body).encode(), 0)
        need = (_SHARD_SLOTS[shard] ^ crc_hqx(b"\0\0\0", state)) & _SLOT_MASK
        return body + _suffix_table()[need]


def token_digest(token: str) -> str:
    """What the record keeps of an access token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()
