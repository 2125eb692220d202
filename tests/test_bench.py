"""The benchmark suite must not rot: ``python -m bench --quick`` runs every benchmark at its
smallest size and produces numbers. No timings are asserted (the machine is shared); only
that each benchmark ran and filled its rows.

Needs the machine's Redis and PostgreSQL (the benchmarks, like ``make bench``, use
127.0.0.1:6379 and :5432); skipped with the reason when either is missing.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from server.embedded import LOCAL_POSTGRES, LOCAL_REDIS, postgres_answers, redis_answers

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"\d")

pytestmark = pytest.mark.slow


@pytest.mark.timeout(110)
def test_quick_bench_runs_and_produces_numbers(tmp_path: Path) -> None:
    if not redis_answers(os.environ.get("REDIS_URL") or LOCAL_REDIS):
        pytest.skip("the benchmarks need the machine's Redis (127.0.0.1:6379 or REDIS_URL)")
    if not postgres_answers(os.environ.get("DATABASE_URL") or LOCAL_POSTGRES):
        pytest.skip("the archive benchmark needs PostgreSQL (127.0.0.1:5432/test or DATABASE_URL)")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    figures = report["figures"]
    assert set(figures) == {"status", "fanout", "sockets", "redis", "throughput", "longwaits", "archive"}
    assert not [name for name, f in figures.items() if "error" in f]
    rows = report["rows"]
    assert {r["what"] for r in rows} == {
        "status endpoint, 1 web process",  # --quick skips the 2-process run
        "publish-to-browser latency",  # and --quick skips the 2-process runs of these two
        "sustained fan-out",
        "memory per idle socket",
        "update cost for a bot",
        "Redis memory per request",
        "requests through the system, 2 workers",
        "long waits without workers",
        "archive records/s",
    }
    for row in rows:
        assert NUMBER.search(row["ours"]), row
        assert row["met"] in (True, False), row
    # the figures are real numbers, not placeholders
    assert figures["status"]["processes_1"]["ours"]["requests_per_s"] > 0
    assert figures["fanout"]["longrun"]["latency"]["samples"] > 0
    assert figures["fanout"]["socketio"]["latency"]["samples"] > 0
    assert not math.isnan(figures["fanout"]["longrun"]["latency"]["p99_ms"])
    assert figures["sockets"]["longrun"]["rss_after_mib"] > 0
    assert figures["redis"]["update"]["replies_read_per_call"] == 1
    run = figures["throughput"]["workers_2"]
    assert run["statuses"] == {"completed": run["requests"]}
    assert figures["longwaits"]["statuses"] == {"completed": figures["longwaits"]["requests"]}
    assert figures["archive"]["speedup"] > 0
    table = (tmp_path / "latest.md").read_text()
    assert table.count("\n|") >= len(rows) + 1
