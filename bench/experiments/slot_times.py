"""Where a concurrency slot's time goes, while ``python -m bench.system throughput`` runs.

``python -m bench.experiments.slot_times [--redis-url URL] [--service vehicle-fines]``, started
just before the benchmark: it waits for the benchmark's rate-limit registry to fill, watches its
sorted set of allowed jobs every 2 ms, and for each job that leaves it reads its record's own
``started`` and ``finished`` times (the ``_p`` part). It prints the medians and 90th percentiles
of: promotion (first seen in the set) to ``processing``, ``processing`` to the final state, the
final state to the release (last seen), and the whole slot. RQ's own score in that set is whole
seconds, so the first sighting stands for the promotion (±2 ms). Not part of ``make bench``: the
polling costs a few percent of a core.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import orjson
import redis

from server.record import Keys

POLL = 0.002


def watch(client: redis.Redis, service: str, wait: float = 120.0) -> list[tuple[float, float, float, float]]:
    """(promoted, started, finished, released) per job of the first registry of ``service`` to fill."""
    deadline = time.time() + wait
    key: bytes | None = None
    while key is None and time.time() < deadline:
        for k in client.smembers("rq:rl-keys"):
            if k.endswith(f"service:{service}".encode()) and client.zcard(b"rq:rl:" + k + b":allowed"):
                key = k
        time.sleep(0.05)
    if key is None:
        raise SystemExit(f"no {service} jobs appeared within {wait:.0f} s")
    prefix = key.decode().split("service:")[0]
    keys, allowed = Keys(prefix), b"rq:rl:" + key + b":allowed"
    seen: dict[bytes, list[float]] = {}
    rows: list[tuple[float, float, float, float]] = []
    quiet_since = time.time()
    while time.time() - quiet_since < 5:
        now = time.time()
        present = {job for job, _ in client.zrange(allowed, 0, -1, withscores=True)}
        if present:
            quiet_since = now
        for job in present:
            seen.setdefault(job, [now, now])[1] = now
        gone = [job for job in seen if job not in present]
        if gone:
            pipe = client.pipeline(transaction=False)
            for job in gone:
                pipe.get(keys.record(job.decode()[len(prefix) :].rsplit("-", 1)[0]))
            for job, raw in zip(gone, pipe.execute(), strict=True):
                first, last = seen.pop(job)
                private = orjson.loads(raw).get("_p", {}) if raw else {}
                if private.get("started") and private.get("finished"):
                    rows.append((first, private["started"], private["finished"], (last + now) / 2))
        time.sleep(POLL)
    return rows


def summary(rows: Sequence[tuple[float, float, float, float]]) -> str:
    def ms(values: list[float]) -> str:
        ordered = sorted(values)
        return f"{statistics.median(ordered) * 1000:.1f} ms (p90 {ordered[int(len(ordered) * 0.9)] * 1000:.1f})"

    return (
        f"{len(rows)} jobs: slot {ms([r[3] - r[0] for r in rows])}; "
        f"promotion → processing {ms([r[1] - r[0] for r in rows])}; "
        f"processing → final {ms([r[2] - r[1] for r in rows])}; "
        f"final → release {ms([r[3] - r[2] for r in rows])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--service", default="vehicle-fines")
    args = parser.parse_args()
    print(summary(watch(redis.Redis.from_url(args.redis_url), args.service)))


if __name__ == "__main__":
    main()
