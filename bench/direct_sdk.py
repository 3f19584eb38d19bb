"""The floor: the raw `openai` SDK streaming from the same stamped fake upstream.

    .venv/bin/python bench/direct_sdk.py [--levels 10,50,100,200]

N concurrent `AsyncOpenAI` streams (typed chunks, as conversations/llm.py reads them)
against bench/upstream.py in its own process: 200 tokens at 50 tokens/s each. The
added delay per token is receive time minus upstream emit time, so the server's own
figures in the stream sweep compare with this directly. Results:
bench/results/direct_sdk.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai import AsyncOpenAI  # noqa: E402

from bench import harness as h  # noqa: E402
from bench.upstream import stamps  # noqa: E402


async def one(
    client: AsyncOpenAI, tokens: int, tps: float
) -> tuple[list[float], float | None, int]:
    delays: list[float] = []
    sent = time.time()
    first = None
    stream = await client.chat.completions.create(
        model=h.MODEL,
        stream=True,
        stream_options={"include_usage": True},
        messages=[
            {"role": "user", "content": f"[[fake tokens={tokens} tps={tps:g}]] Hello"}
        ],
    )
    async for chunk in stream:
        now = time.time()
        for choice in chunk.choices:
            for emitted, _i in stamps(choice.delta.content or ""):
                delays.append(now - emitted)
                if first is None:
                    first = now - sent
    return delays, first, len(delays)


def make_client(base_url: str, transport: str) -> AsyncOpenAI:
    import openai

    if transport == "aiohttp":
        http = openai.DefaultAioHttpClient()
    else:
        http = openai.DefaultAsyncHttpxClient()
    return AsyncOpenAI(
        base_url=base_url, api_key="bench", max_retries=0, http_client=http
    )


async def level(
    base_url: str,
    n: int,
    tokens: int,
    tps: float,
    upstream_pid: int,
    transport: str = "httpx",
) -> dict:
    client = make_client(base_url, transport)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    up0 = h.cpu_seconds(upstream_pid)
    started = time.time()
    results = await asyncio.gather(*(one(client, tokens, tps) for _ in range(n)))
    elapsed = time.time() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    upstream_cpu = h.cpu_seconds(upstream_pid) - up0
    await client.close()
    delays = [d for r in results for d in r[0]]
    firsts = [r[1] for r in results if r[1] is not None]
    count = sum(r[2] for r in results)
    return {
        "n": n,
        "tokens": count,
        "added_delay_ms": {
            "p50": h.ms(h.pct(delays, 50)),
            "p99": h.ms(h.pct(delays, 99)),
        },
        "first_token_ms": {
            "p50": h.ms(h.pct(firsts, 50)),
            "p99": h.ms(h.pct(firsts, 99)),
        },
        "tokens_per_second": round(count / elapsed, 1),
        "client_cpu_us_per_token": round(client_cpu / count * 1e6, 1)
        if count
        else None,
        "upstream_cpu_us_per_token": round(upstream_cpu / count * 1e6, 1)
        if count
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="10,50,100,200")
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--tps", type=float, default=50.0)
    parser.add_argument(
        "--transports",
        default="httpx,aiohttp",
        help="the SDK's HTTP clients to compare: httpx (default client), aiohttp "
        "(openai.DefaultAioHttpClient)",
    )
    args = parser.parse_args()
    rows, out = [], []
    with h.upstream(tokens=args.tokens, tps=args.tps) as (base_url, upstream_pid):
        for transport in args.transports.split(","):
            asyncio.run(
                level(base_url, 2, 20, args.tps, upstream_pid, transport)
            )  # warm-up
            for n in (int(x) for x in args.levels.split(",")):
                summary = asyncio.run(
                    level(base_url, n, args.tokens, args.tps, upstream_pid, transport)
                )
                summary["transport"] = transport
                print(summary, flush=True)
                out.append(summary)
                rows.append(
                    [
                        transport,
                        n,
                        summary["added_delay_ms"]["p50"],
                        summary["added_delay_ms"]["p99"],
                        summary["first_token_ms"]["p50"],
                        summary["tokens_per_second"],
                        summary["client_cpu_us_per_token"],
                        summary["upstream_cpu_us_per_token"],
                    ]
                )
    table = (
        f"Direct openai SDK stream (the floor): {args.tokens} tokens at {args.tps:g} tokens/s per stream\n\n"
        + h.markdown_table(
            [
                "SDK HTTP client",
                "streams",
                "added p50 ms",
                "added p99 ms",
                "first token p50 ms",
                "tokens/s",
                "client CPU µs/token",
                "upstream CPU µs/token",
            ],
            rows,
        )
    )
    path = h.write_results(
        "direct_sdk", {"tokens": args.tokens, "tps": args.tps, "levels": out}, table
    )
    print(table)
    print(f"written: {path} and .json")


if __name__ == "__main__":
    main()
