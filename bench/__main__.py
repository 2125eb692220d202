"""``python -m bench`` (``make bench``): every benchmark of issue 8, one table.

``python -m bench [--only NAME ...] [--quick] [--out DIR]``

Runs each benchmark in turn (every server and load generator in a process of
its own, on loopback, under a private key prefix), prints one table — what,
how, ours, the peer or baseline, their ratio, the target, met? — and writes
``latest.json`` (the machine, every figure) and ``latest.md`` (the table) to
``--out`` (default ``bench/results``; with ``--quick``, nowhere unless given).

``--quick`` runs every benchmark at its smallest size: a smoke run (about a
minute) that proves the code works, not a measurement. ``--only`` takes names
from: {names}.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import archive, fanout, redis_costs, sockets_memory, status, system
from bench.common import RESULTS, Result, Row, machine, raise_fd_limit


async def run_archive(**sizes: Any) -> Result:
    figures = await archive.run(**sizes)
    speedup, target = figures["speedup"], figures["target_speedup"]
    return Result(
        "archive",
        figures,
        [
            Row(
                what="archive records/s",
                how=f"{figures['records']:,} terminal records, Redis streams → PostgreSQL (read, parse, write, "
                f"commit, ack), batches of {figures['batch']:,}; the same job with one INSERT per row "
                f"({figures['baseline_records']:,} records)",
                ours=f"archiver {figures['archiver_records_per_s']:,}/s ({figures['parsers']} parser processes)",
                peer=f"row-by-row INSERT {figures['baseline_records_per_s']:,}/s",
                ratio=f"{speedup}",
                target=f"archiver ≥ {target}× row-by-row",
                met=speedup >= target,
                note=(
                    "" if speedup >= target else f"missed by {target - speedup:.1f}× ({speedup / target:.0%} of it); "
                )
                + f"parsing in the archiver's process {figures['in_process_records_per_s']:,}/s; "
                f"COPY writes alone (parsed rows, no Redis) {figures['copy_only_records_per_s']:,}/s",
            )
        ],
    )


@dataclass(frozen=True)
class Benchmark:
    run: Callable[..., Awaitable[Result]]
    full: dict[str, Any]
    quick: dict[str, Any]


BENCHMARKS: dict[str, Benchmark] = {
    "status": Benchmark(
        status.run,
        {"duration": 5.0, "rounds": 2},
        {"duration": 1.0, "connections": 16, "process_counts": (1,), "warmup": 0.0},
    ),
    "fanout": Benchmark(
        fanout.run,
        {"sockets": 2000, "rate": 1000, "duration": 10.0, "steps": (2000, 3500, 5000, 7000, 10000)},
        {"sockets": 100, "rate": 100, "duration": 1.0, "steps": (), "publishers": 1, "systems": fanout.SYSTEMS},
    ),
    "sockets": Benchmark(
        sockets_memory.run,
        {"sockets": 10_000},
        {"sockets": 200, "settle": 0.5, "systems": (*fanout.SYSTEMS, sockets_memory.SSE)},
    ),
    "redis": Benchmark(redis_costs.run, {"calls": 2000, "records": 10_000}, {"calls": 100, "records": 200}),
    "throughput": Benchmark(
        system.throughput,
        {"requests": 2000, "workers": (2, 8)},
        {"requests": 20, "workers": (2,), "web": (1,), "rounds": 1},
    ),
    "longwaits": Benchmark(
        system.longwaits,
        {"requests": 1000, "workers": 4, "seconds": 60.0},
        {"requests": 20, "workers": 2, "seconds": 2.0},
    ),
    "archive": Benchmark(run_archive, {"records": 100_000}, {"records": 500, "baseline": 200}),
}

COLUMNS = ("what", "how", "ours", "peer / baseline", "ratio", "target", "met?")


def cells(row: dict[str, Any]) -> list[str]:
    met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
    if row["note"]:
        met += f" — {row['note']}"
    return [row["what"], row["how"], row["ours"], row["peer"], row["ratio"], row["target"], met]


def markdown(rows: list[dict[str, Any]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in cells(row)) + " |" for row in rows]
    return "\n".join(lines)


def plain(rows: list[dict[str, Any]]) -> str:
    """The table for a terminal: one block per row (the notes are long)."""
    out = []
    for row in rows:
        met = {True: "MET", False: "MISSED", None: "—"}[row["met"]]
        out.append(f"{row['what']:<30} ours {row['ours']:<38} {met:<7} target {row['target']}")
        out.append(f"{'':<30} peer {row['peer']:<38} ratio {row['ratio']}")
        out.append(f"{'':<30} how  {row['how']}")
        if row["note"]:
            out.append(f"{'':<30} note {row['note']}")
    return "\n".join(out)


def describe(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, Linux {info['kernel']}, "
        f"Python {info['python']}, Redis {info['redis']}"
    )


async def main_async(names: list[str], quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    rows: list[dict[str, Any]] = []
    figures: dict[str, Any] = {}
    ok = True
    for name in names:
        bench = BENCHMARKS[name]
        sizes = bench.quick if quick else bench.full
        print(f"== {name} {sizes}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = await bench.run(**sizes)
        except Exception as exc:
            ok = False
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(Row(what=name, how="", ours="ERROR", met=False, note=error).as_dict())
            figures[name] = {"error": repr(exc)}
            continue
        elapsed = round(time.monotonic() - started, 1)
        print(f"   {name}: {elapsed} s", file=sys.stderr, flush=True)
        figures[name] = {**result.figures, "elapsed_s": elapsed}
        rows += [r.as_dict() for r in result.rows]
    return rows, figures, ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description="Longrun benchmarks (issue 8)", epilog=f"benchmarks: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--only", action="append", default=[], help="run only these (repeat, or comma-separate)")
    parser.add_argument("--quick", action="store_true", help="smallest sizes: a smoke run, not a measurement")
    parser.add_argument("--out", type=Path, help="where to write latest.json and latest.md")
    args = parser.parse_args(argv)
    names = [n for item in args.only for n in item.split(",") if n] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    # A SIGTERM (make interrupted, CI timeout) unwinds like Ctrl-C, so every child is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    raise_fd_limit()
    info = machine()
    started = datetime.now(UTC)
    t0 = time.monotonic()
    rows, figures, ok = asyncio.run(main_async(names, args.quick))
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" --only {n}" for n in args.only)
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "quick": args.quick,
        "elapsed_s": round(time.monotonic() - t0, 1),
        "machine": info,
        "rows": rows,
        "figures": figures,
    }
    print()
    print(f"Longrun benchmarks, {report['date']}, {report['elapsed_s']} s — {describe(info)}")
    print(plain(rows))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        md = (
            f"Run {report['date']} (`{command}`, {report['elapsed_s']:.0f} s, commit {info['commit']}) on "
            f"{describe(info)}.\n\n{markdown(rows)}\n"
        )
        (out / "latest.md").write_text(md)
        print(f"\nwrote {out / 'latest.json'} and {out / 'latest.md'}")
    return 0 if ok else 1


if __doc__:
    __doc__ = __doc__.format(names=", ".join(BENCHMARKS))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
