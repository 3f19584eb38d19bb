"""The floor: what the fake upstream costs per streamed token, read by a raw client.

Starts `python -m conversations.testing.fake_openai` as its own process, opens N
concurrent streams through the openai SDK (raw SSE lines through
`with_streaming_response`, or `--typed` chunk objects, which cost the client about
ten times more CPU), and reports the fake's CPU per token, the client's CPU
per token and how late tokens arrive against the fake's own schedule.

    .venv/bin/python bench/fake_upstream_cost.py --streams 100 --tokens 200 --tps 50
    [--typed] [--ramp 2] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2
from openai import AsyncOpenAI

BASE_DIR = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
USER = [{"role": "user", "content": "Tell me a long story about benchmarks."}]


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"fake not listening on {port}")


async def one_stream(
    client: AsyncOpenAI,
    raw: bool,
    tps: float,
    lateness: list[float],
    delay: float = 0.0,
) -> tuple[int, float]:
    """Read one stream after `delay` seconds; return (content chunks, seconds to
    the first one). Each chunk's lateness is its arrival minus
    (first arrival + i / tps)."""
    await asyncio.sleep(delay)
    started = time.monotonic()
    arrivals: list[float] = []
    if raw:
        async with client.chat.completions.with_streaming_response.create(
            model="fake-model", messages=USER, stream=True
        ) as response:
            async for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    arrivals.append(time.monotonic())
    else:
        stream = await client.chat.completions.create(
            model="fake-model", messages=USER, stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append(time.monotonic())
    if arrivals and tps > 0:
        first = arrivals[0]
        lateness.extend(t - (first + i / tps) for i, t in enumerate(arrivals))
    return len(arrivals), (arrivals[0] - started) if arrivals else float("nan")


async def run(args: argparse.Namespace, base_url: str, pid: int) -> None:
    # a loaded client must not turn its own slowness into connect timeouts
    client = AsyncOpenAI(
        base_url=base_url,
        api_key="bench",
        max_retries=0,
        timeout=httpx2.Timeout(600, connect=60),
    )
    # warm up the connection pool and both processes
    await asyncio.gather(*(one_stream(client, not args.typed, 0, []) for _ in range(5)))

    lateness: list[float] = []
    fake_before, client_before = process_cpu(pid), own_cpu()
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            one_stream(
                client, not args.typed, args.tps, lateness, i * args.ramp / args.streams
            )
            for i in range(args.streams)
        )
    )
    wall = time.monotonic() - started
    fake_cpu = process_cpu(pid) - fake_before
    client_cpu = own_cpu() - client_before
    await client.close()
    stats = httpx2.get(base_url.removesuffix("/v1") + "/_fake/stats").json()

    tokens = sum(count for count, _ in results)
    first = sorted(ttft for _, ttft in results)
    late = sorted(lateness)

    def pct(values: list[float], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] * 1000

    mode = "typed SDK chunks" if args.typed else "raw lines"
    print(
        f"streams={args.streams} tokens/stream={args.tokens} tps={args.tps} "
        f"ramp={args.ramp}s ({mode})"
    )
    print(f"tokens received       {tokens} of {args.streams * args.tokens}")
    print(f"wall                  {wall:.2f} s   ({tokens / wall:.0f} tokens/s)")
    print(
        f"fake CPU              {fake_cpu:.2f} s = {fake_cpu / tokens * 1e6:.1f} us/token"
    )
    print(
        f"client CPU            {client_cpu:.2f} s = "
        f"{client_cpu / tokens * 1e6:.1f} us/token"
    )
    print(
        f"first token           p50 {pct(first, 0.5):.1f} ms  "
        f"p99 {pct(first, 0.99):.1f} ms"
    )
    fake_late = stats["lateness"]
    print(
        f"fake's own lateness   max {fake_late['max_ms']} ms, "
        f"{fake_late['over_5ms']} / {fake_late['over_20ms']} / {fake_late['over_50ms']}"
        f" of {fake_late['paced_writes']} writes over 5 / 20 / 50 ms"
    )
    if late:
        print(
            f"client-seen lateness  p50 {pct(late, 0.5):.1f} ms  "
            f"p99 {pct(late, 0.99):.1f} ms  max {late[-1] * 1000:.1f} ms  "
            f"mean {statistics.fmean(late) * 1000:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--tps", type=float, default=50)
    parser.add_argument(
        "--ramp", type=float, default=2.0, help="seconds over which streams start"
    )
    parser.add_argument(
        "--typed", action="store_true", help="parse typed chunks instead of raw lines"
    )
    parser.add_argument("--uvloop", action="store_true", help="fake runs on uvloop")
    args = parser.parse_args()

    port = free_port()
    command = [
        sys.executable,
        "-m",
        "conversations.testing.fake_openai",
        "--port",
        str(port),
        "--tokens",
        str(args.tokens),
        "--tps",
        str(args.tps),
    ]
    if args.uvloop:
        command.append("--uvloop")
    fake = subprocess.Popen(command, cwd=BASE_DIR, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        asyncio.run(run(args, f"http://127.0.0.1:{port}/v1", fake.pid))
    finally:
        fake.terminate()
        fake.wait(5)


if __name__ == "__main__":
    main()
