"""The soak: steady chat traffic for a long time, reporting memory drift.

    .venv/bin/python bench/soak.py [--minutes 10] [--clients 20]

One daphne process with Redis and PostgreSQL, the stamped fake upstream in its own
process. Each of `--clients` logged-in clients keeps one socket and sends message
after message (a new dialogue each time, so auto-titles run too), each reply 100
tokens at 50 tokens/s. Every 15 s it samples the server's RSS, CPU, asyncio tasks and
open websockets (/healthz?detail=1). Drift is the RSS at the end minus the RSS after
the first minute (the warm-up), also per hour. Results: bench/results/soak.json, .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as h  # noqa: E402


async def client_loop(
    ws_url: str,
    origin: str,
    session_key: str,
    until: float,
    tokens: int,
    tps: float,
    counts: dict,
) -> None:
    ws = await h.connect(ws_url, session_key, origin)
    try:
        while time.monotonic() < until:
            await ws.send(
                json.dumps(
                    {
                        "type": "message.send",
                        "dialogue": None,
                        "client_id": uuid.uuid4().hex,
                        "content": f"[[fake tokens={tokens} tps={tps:g}]] soak",
                    }
                )
            )
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if event["type"] in (
                    "reply.completed",
                    "reply.failed",
                    "reply.stopped",
                ):
                    counts[event["message"]["status"]] = (
                        counts.get(event["message"]["status"], 0) + 1
                    )
                    break
                if event["type"] == "error":
                    counts["error:" + event.get("code", "")] = (
                        counts.get("error:" + event.get("code", ""), 0) + 1
                    )
                    await asyncio.sleep(1)
                    break
    finally:
        await ws.close()


def detail(http: str) -> dict:
    with urllib.request.urlopen(f"{http}/healthz?detail=1", timeout=10) as response:
        return json.loads(response.read()).get("process", {})


async def soak(
    ws_url: str, http: str, clients, pid: int, minutes: float, tokens: int, tps: float
) -> dict:
    counts: dict = {}
    started = time.monotonic()
    until = started + minutes * 60
    tasks = [
        asyncio.create_task(client_loop(ws_url, http, key, until, tokens, tps, counts))
        for key, _d in clients
    ]
    samples = []
    while not all(t.done() for t in tasks):
        process = await asyncio.to_thread(detail, http)
        samples.append(
            {
                "t": round(time.monotonic() - started, 1),
                "rss_kb": h.rss_kb(pid),
                "cpu_s": round(h.cpu_seconds(pid), 2),
                "tasks": process.get("asyncio_tasks"),
                "websockets": process.get("websockets"),
                "replies": sum(counts.values()),
            }
        )
        print(samples[-1], flush=True)
        await asyncio.sleep(15)
    await asyncio.gather(*tasks, return_exceptions=True)
    warm = next((s for s in samples if s["t"] >= 60), samples[0])
    end = samples[-1]
    hours = max((end["t"] - warm["t"]) / 3600, 1e-9)
    drift_mb = (end["rss_kb"] - warm["rss_kb"]) / 1024
    return {
        "minutes": minutes,
        "clients": len(clients),
        "replies": counts,
        "rss_mb_start": round(samples[0]["rss_kb"] / 1024, 1),
        "rss_mb_after_warmup": round(warm["rss_kb"] / 1024, 1),
        "rss_mb_end": round(end["rss_kb"] / 1024, 1),
        "rss_mb_peak": round(max(s["rss_kb"] for s in samples) / 1024, 1),
        "drift_mb": round(drift_mb, 1),
        "drift_mb_per_hour": round(drift_mb / hours, 1),
        "tasks_after_warmup": warm["tasks"],
        "tasks_end": end["tasks"],
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--tps", type=float, default=50.0)
    parser.add_argument("--database-url", default=h.DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=h.DEFAULT_REDIS_URL)
    args = parser.parse_args()
    from deploy.cluster import ensure_database

    ensure_database(args.database_url)
    h.flush_redis(args.redis_url)
    with (
        h.upstream(tokens=args.tokens, tps=args.tps) as (base_url, _pid),
        h.server(
            procs=1,
            through_nginx=False,
            base_url=base_url,
            database_url=args.database_url,
            redis_url=args.redis_url,
            extra_env={"QUOTA_DAILY_MESSAGES": "0"},
        ) as (cluster, ws_url, http),
    ):
        h.django_setup(args.database_url, args.redis_url)
        clients = h.make_clients(args.clients, prefix="soak")
        result = asyncio.run(
            soak(
                ws_url,
                http,
                clients,
                cluster.backends[0].pid,
                args.minutes,
                args.tokens,
                args.tps,
            )
        )
    row = [
        result["minutes"],
        result["clients"],
        sum(result["replies"].values()),
        json.dumps(result["replies"]),
        result["rss_mb_after_warmup"],
        result["rss_mb_end"],
        result["rss_mb_peak"],
        result["drift_mb"],
        result["drift_mb_per_hour"],
        f"{result['tasks_after_warmup']} → {result['tasks_end']}",
    ]
    table = (
        "Soak: one daphne process, Redis, PostgreSQL; each client sends message after message "
        f"({args.tokens} tokens at {args.tps:g} tokens/s)\n\n"
        + h.markdown_table(
            [
                "minutes",
                "clients",
                "replies",
                "statuses",
                "RSS MB after 1 min",
                "RSS MB end",
                "RSS MB peak",
                "drift MB",
                "drift MB/h",
                "asyncio tasks",
            ],
            [row],
        )
    )
    path = h.write_results("soak", result, table)
    print(table)
    print(f"written: {path} and .json")


if __name__ == "__main__":
    main()
