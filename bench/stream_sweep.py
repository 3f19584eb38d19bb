"""The streaming sweep (issue 3's benchmark): N concurrent websocket streams.

    .venv/bin/python bench/stream_sweep.py                       # one daphne process
    .venv/bin/python bench/stream_sweep.py --cluster 2 --levels 50,100,200   # nginx + 2

Each of N logged-in clients (its own user, session cookie and dialogue, Origin set)
sends one message; the fake upstream (bench/upstream.py, its own process) streams
200 tokens at 50 tokens/s per stream, stamping each token with the time it left.
Sends are spread over one second. Per N it reports: added delay per token (client
receive time minus upstream emit time) p50/p99, time to first delta, frames per reply
and per second per stream, database row writes per reply (PostgreSQL statistics),
server CPU per token (utime+stime of the daphne processes), server memory per
connection (RSS growth when N sockets connect, divided by N) and tokens/s delivered.
Results: bench/results/stream_sweep-<label>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402


def start_profile(pid: int, seconds: float, path: Path):
    """py-spy (pip install py-spy) samples the daphne process while the level streams."""
    spy = Path(sys.executable).parent / "py-spy"
    delay = float(os.environ.get("BENCH_PROFILE_DELAY", "0"))  # skip the send burst
    return subprocess.Popen(
        [
            "sh",
            "-c",
            f'sleep {delay}; exec "$0" "$@"',
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "500",
            "--nonblocking",
            *(["--gil"] if os.environ.get("BENCH_PROFILE_GIL", "1") == "1" else []),
            "--format",
            "raw",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run_level(
    n: int,
    clients,
    ws_url: str,
    origin: str,
    pids: list[int],
    database_url: str,
    tokens: int,
    tps: float,
    profile: Path | None = None,
) -> dict:
    sem = asyncio.Semaphore(50)

    async def open_one(session_key):
        async with sem:
            return await h.connect(ws_url, session_key, origin)

    rss_before = sum(h.rss_kb(p) for p in pids)
    sockets = await asyncio.gather(*(open_one(key) for key, _d in clients[:n]))
    await asyncio.sleep(1.0)
    rss_connected = sum(h.rss_kb(p) for p in pids)
    writes_before = h.pg_writes(database_url)["rows"]
    cpu_before = sum(h.cpu_seconds(p) for p in pids)
    sys_before = sum(h.cpu_split(p)[1] for p in pids)
    client_cpu_before = _self_cpu()
    started = time.time()
    timeout = tokens / tps + 60

    async def one(ws, dialogue_id):
        await asyncio.sleep(random.random())  # spread the sends over a second
        return await h.stream_one(
            ws, dialogue_id, f"[[fake tokens={tokens} tps={tps:g}]] Hello", timeout
        )

    spy = start_profile(pids[0], max(tokens / tps, 3), profile) if profile else None
    results = await asyncio.gather(
        *(one(ws, d) for ws, (_k, d) in zip(sockets, clients[:n], strict=True))
    )
    elapsed = time.time() - started
    cpu = sum(h.cpu_seconds(p) for p in pids) - cpu_before
    sys_cpu = sum(h.cpu_split(p)[1] for p in pids) - sys_before
    client_cpu = _self_cpu() - client_cpu_before
    rss_streaming_end = sum(h.rss_kb(p) for p in pids)
    if spy is not None:
        spy.wait(60)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.sleep(h.PG_STATS_SETTLE_SECONDS)
    writes = h.pg_writes(database_url)["rows"] - writes_before

    # Steady state: tokens emitted once the last stream's first delta arrived.
    firsts = [r.first_at for r in results if r.first_at]
    summary = h.summarize(results, steady_after=max(firsts) if firsts else None)
    delivered = summary["tokens"]
    stream_seconds = tokens / tps
    summary.update(
        {
            "n": n,
            "wall_seconds": round(elapsed, 2),
            "tokens_per_second": round(delivered / elapsed, 1) if elapsed else None,
            "server_cpu_seconds": round(cpu, 2),
            "server_system_cpu_seconds": round(sys_cpu, 2),
            "server_cpu_us_per_token": round(cpu / delivered * 1e6, 1)
            if delivered
            else None,
            "client_cpu_seconds": round(client_cpu, 2),
            "db_row_writes_per_reply": round(writes / n, 2),
            "db_write_target_per_reply": 4 + stream_seconds,
            "memory_kb_per_connection": round((rss_connected - rss_before) / n, 1),
            "rss_mb_after": round(rss_streaming_end / 1024, 1),
        }
    )
    return summary


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--levels", default="10,50,100,200", help="concurrent streams per step"
    )
    parser.add_argument(
        "--cluster",
        type=int,
        default=0,
        help="0: one daphne process, clients connect directly; K: nginx in front of K processes",
    )
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--tps", type=float, default=50.0)
    parser.add_argument("--database-url", default=h.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=h.DEFAULT_REDIS_URL)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="server environment for bench/variant_settings.py, e.g. BENCH_CONN_HEALTH_CHECKS=false",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the (first) daphne process with py-spy during each level: "
        "bench/results/profile-<label>-<n>.txt, collapsed stacks",
    )
    parser.add_argument(
        "--label", help="result file suffix (default: direct-1 or nginx-K)"
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    label = args.label or (f"nginx-{args.cluster}" if args.cluster else "direct-1")

    from deploy.cluster import ensure_database

    ensure_database(args.database_url)
    h.flush_redis(args.redis_url)
    procs = args.cluster or 1
    variant = dict(v.split("=", 1) for v in args.variant)
    if variant:
        variant["DJANGO_SETTINGS_MODULE"] = "bench.variant_settings"
    rows, results = [], []
    with (
        h.upstream(tokens=args.tokens, tps=args.tps) as (base_url, upstream_pid),
        h.server(
            procs=procs,
            through_nginx=bool(args.cluster),
            base_url=base_url,
            database_url=args.database_url,
            redis_url=args.redis_url,
            extra_env=variant,
        ) as (cluster, ws_url, origin),
    ):
        h.django_setup(args.database_url, args.redis_url)
        clients = h.make_clients(max(levels))
        pids = [b.pid for b in cluster.backends]
        # Warm up every process (imports, tokenizer, connections) outside the figures.
        asyncio.run(
            run_level(
                len(pids) * 2,
                clients,
                ws_url,
                origin,
                pids,
                args.database_url,
                20,
                args.tps,
            )
        )
        for n in levels:
            print(f"[{label}] {n} concurrent streams ...", flush=True)
            summary = asyncio.run(
                run_level(
                    n,
                    clients,
                    ws_url,
                    origin,
                    pids,
                    args.database_url,
                    args.tokens,
                    args.tps,
                    h.RESULTS / f"profile-{label}-{n}.txt" if args.profile else None,
                )
            )
            results.append(summary)
            print("   ", summary, flush=True)
            rows.append(
                [
                    n,
                    f"{summary['completed']}/{n}",
                    summary["added_delay_ms"]["p50"],
                    summary["added_delay_ms"]["p99"],
                    summary["first_delta_ms"]["p50"],
                    summary["first_delta_ms"]["p99"],
                    summary["frames_per_reply"],
                    summary["frames_per_second_per_stream"]["max"],
                    summary["db_row_writes_per_reply"],
                    summary["tokens_per_second"],
                    summary["server_cpu_us_per_token"],
                    summary["memory_kb_per_connection"],
                ]
            )
    title = (
        f"Stream sweep, {label}: {args.tokens} tokens at {args.tps:g} tokens/s per stream, "
        f"{procs} daphne process(es){' behind nginx' if args.cluster else ''}, Redis, PostgreSQL\n\n"
    )
    table = title + h.markdown_table(
        [
            "streams",
            "completed",
            "added p50 ms",
            "added p99 ms",
            "first delta p50 ms",
            "first delta p99 ms",
            "frames/reply",
            "max frames/s/stream",
            "DB row writes/reply",
            "tokens/s delivered",
            "server CPU µs/token",
            "server KB/connection",
        ],
        rows,
    )
    path = h.write_results(
        f"stream_sweep-{label}",
        {
            "label": label,
            "procs": procs,
            "through_nginx": bool(args.cluster),
            "tokens": args.tokens,
            "tps": args.tps,
            "levels": results,
        },
        table,
    )
    print(table)
    print(f"written: {path} and .json")


if __name__ == "__main__":
    main()
