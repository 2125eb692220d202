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
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from server.devtools.embedded import LOCAL_POSTGRES, LOCAL_REDIS, postgres_answers, redis_answers
from tests.helpers import npm_ci

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"\d")

pytestmark = pytest.mark.slow


#: what each benchmark fills in at its smallest size: the rows of the table
ROWS = {
    "status": {"status endpoint, 1 web process"},  # --quick skips the 2-process run
    # --quick skips the 2-process runs of these two
    "fanout": {"publish-to-browser latency", "sustained fan-out"},
    "sockets": {"memory per idle socket"},
    "redis": {
        "the request log's cost to a bot's update",
        "update cost for a bot",
        "update cost for a bot, Node SDK",
        "Redis memory per request",
    },
    "throughput": {"requests through the system, 2 workers"},
    "longwaits": {"long waits without workers"},
    "archive": {"archive records/s"},
}


def quick_bench(name: str, out: Path) -> dict[str, Any]:
    """``python -m bench --quick --only name``: its report, after the common checks."""
    if not redis_answers(os.environ.get("REDIS_URL") or LOCAL_REDIS):
        pytest.skip("the benchmarks need the machine's Redis (127.0.0.1:6379 or REDIS_URL)")
    if not postgres_answers(os.environ.get("DATABASE_URL") or LOCAL_POSTGRES):
        pytest.skip("the archive benchmark needs PostgreSQL (127.0.0.1:5432/test or DATABASE_URL)")
    if name == "redis":
        npm_ci()  # the Node SDK's row runs bots/js (make bench: make node-deps)
    # A session of its own, so that a run past its time is stopped with every server and load
    # generator it started (a plain timeout would kill `python -m bench` and leave its children).
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--only", name, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)
        stdout, stderr = bench.communicate()
        pytest.fail(f"python -m bench --quick --only {name} ran past 100 s\n{stdout[-3000:]}{stderr[-5000:]}")
    assert bench.returncode == 0, stdout[-3000:] + stderr[-5000:]
    report: dict[str, Any] = orjson.loads((out / "latest.json").read_bytes())
    assert report["quick"] is True
    assert report["machine"]["cores"] >= 1
    figures = report["figures"]
    assert set(figures) == {name}
    assert not [n for n, f in figures.items() if "error" in f]
    rows = report["rows"]
    assert {r["what"] for r in rows} == ROWS[name]
    for row in rows:
        assert NUMBER.search(row["ours"]), row
        if name == "status" and not shutil.which("wrk"):
            # without wrk the Python load generator is the limit: the row says the target is
            # not judged (make bench installs wrk; make test does not need it)
            assert row["met"] is None and "not judged" in row["note"], row
        else:
            assert row["met"] in (True, False), row
    table = (out / "latest.md").read_text()
    assert table.count("\n|") >= len(rows) + 1
    return report


# One test per benchmark (the suite's workers run them side by side), together every one.
@pytest.mark.timeout(110)
@pytest.mark.parametrize("name", sorted(ROWS))
def test_quick_bench_runs_and_produces_numbers(name: str, tmp_path: Path) -> None:
    figures = quick_bench(name, tmp_path)["figures"]
    # the figures are real numbers, not placeholders
    if name == "status":
        assert figures["status"]["processes_1"]["ours"]["requests_per_s"] > 0
    elif name == "fanout":
        assert figures["fanout"]["longrun"]["latency"]["samples"] > 0
        assert figures["fanout"]["socketio"]["latency"]["samples"] > 0
        assert not math.isnan(figures["fanout"]["longrun"]["latency"]["p99_ms"])
    elif name == "sockets":
        assert figures["sockets"]["longrun"]["rss_after_mib"] > 0
        assert figures["sockets"]["longrun-sse"]["rss_after_mib"] > 0  # SSE streams beside the sockets
    elif name == "redis":
        assert figures["redis"]["update"]["replies_read_per_call"] == 1
        assert figures["redis"]["log"]["calls_each"] > 0 and figures["redis"]["log"]["usec_with_log"] > 0
    elif name == "throughput":
        run = figures["throughput"]["workers_2"]
        assert run["statuses"] == {"completed": run["requests"]}
    elif name == "longwaits":
        assert figures["longwaits"]["statuses"] == {"completed": figures["longwaits"]["requests"]}
    elif name == "archive":
        assert figures["archive"]["speedup"] > 0


def test_every_benchmark_has_its_quick_test() -> None:
    # Through the command line: tests/ and bench/ do not import each other.
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True)
    listed = re.search(r"benchmarks: ([\w, ]+)", done.stdout)
    assert listed, done.stdout
    assert set(listed.group(1).replace(",", " ").split()) == set(ROWS)
