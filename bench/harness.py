"""Shared parts of the benchmarks: the stamped upstream process, a server (one daphne
process, or the nginx cluster), logged-in websocket clients, and the measurements
(CPU and RSS from /proc, database writes from PostgreSQL's statistics).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS = BASE_DIR / "bench" / "results"
sys.path.insert(0, str(BASE_DIR))

from bench.upstream import stamps  # noqa: E402
from deploy.cluster import Cluster, free_port, wait_for_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/6"
MODEL = "fake-model"


# --- processes -------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextmanager
def upstream(*, tokens: int, tps: float):
    """The stamped fake upstream as its own process; yields its base URL."""
    port = free_port()
    log = open(f"/tmp/chatsite-bench-upstream-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BASE_DIR / "bench" / "upstream.py"),
            "--port",
            str(port),
            "--tokens",
            str(tokens),
            "--tps",
            str(tps),
            "--models",
            MODEL,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=BASE_DIR,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}/v1", proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


def server_env(base_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": base_url,
        "OPENAI_API_KEY": "bench",
        "CHAT_MODELS": MODEL,
        "DEFAULT_CHAT_MODEL": MODEL,
        "CHAT_RATE_LIMIT_PER_MINUTE": "100000",
        "LOG_LEVEL": "WARNING",
        "DJANGO_DEBUG": "false",
        **(extra or {}),
    }


@contextmanager
def server(
    *,
    procs: int,
    through_nginx: bool,
    base_url: str,
    database_url: str,
    redis_url: str,
    extra_env: dict[str, str] | None = None,
):
    """`procs` daphne processes (and nginx in front when `through_nginx`)."""
    # Sessions made here (django_setup) must validate on the servers: one key.
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    root = Path(f"/tmp/chatsite-bench-cluster-{os.getpid()}")
    cluster = Cluster(
        root=root,
        procs=procs,
        port=free_port(),
        database_url=database_url,
        redis_url=redis_url,
        env=server_env(base_url, extra_env),
        access_log=False,
    )
    cluster.start()
    try:
        ws_port = cluster.port if through_nginx else cluster.backends[0].port
        yield (
            cluster,
            f"ws://127.0.0.1:{ws_port}/ws/chat/",
            f"http://127.0.0.1:{ws_port}",
        )
    finally:
        cluster.stop()


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


# --- Django side: users, sessions, dialogues ---------------------------------------------
def django_setup(database_url: str, redis_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    import django

    django.setup()


def make_clients(n: int, prefix: str = "bench") -> list[tuple[str, int]]:
    """n users, each with a session key and an empty dialogue: [(session_key, dialogue_id)]."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from conversations.models import Dialogue

    User = get_user_model()
    run = uuid.uuid4().hex[:8]
    users = User.objects.bulk_create(
        [User(username=f"{prefix}-{run}-{i}", password="!") for i in range(n)]
    )
    out = []
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        dialogue = Dialogue.objects.create(
            owner=user, title="bench", model=MODEL, **_title_fields(Dialogue)
        )
        out.append((session.session_key, dialogue.pk))
    return out


def _title_fields(model) -> dict:
    names = {f.name for f in model._meta.get_fields()}
    # A title set by the user: no auto-title request muddies the upstream's load.
    return {"title_set_by_user": True} if "title_set_by_user" in names else {}


def pg_writes(database_url: str) -> dict[str, int]:
    """Rows inserted/updated/deleted and write transactions so far in that database."""
    import psycopg

    url = database_url.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables"
        ).fetchone()
        return {"rows": int(rows[0])}


# PostgreSQL 15 flushes a busy backend's counters at most every second and an idle
# one's after ten: wait that long before reading them.
PG_STATS_SETTLE_SECONDS = 11


# --- websocket clients -----------------------------------------------------------------
@dataclass
class StreamResult:
    ok: bool = False
    status: str = ""
    frames: int = 0
    tokens: int = 0
    delays: list[float] = field(default_factory=list)
    emitted: list[float] = field(default_factory=list)
    first_delta: float | None = None
    first_at: float = 0.0
    last_at: float = 0.0
    exact: bool = False
    error: str = ""


async def connect(ws_url: str, session_key: str, origin: str):
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(
        ws_url,
        additional_headers={"Cookie": f"sessionid={session_key}"},
        origin=origin,
        open_timeout=30,
        max_size=2**22,
        ping_interval=None,
        compression=None,
    )


async def stream_one(
    ws, dialogue_id: int, content: str, timeout: float
) -> StreamResult:
    """Send one message on an open socket and read its reply to the end."""
    result = StreamResult()
    text: list[str] = []
    sent = time.time()
    await ws.send(
        json.dumps(
            {
                "type": "message.send",
                "dialogue": dialogue_id,
                "content": content,
                "client_id": uuid.uuid4().hex,
            }
        )
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            raw = await asyncio.wait_for(
                ws.recv(), max(0.1, deadline - time.monotonic())
            )
            now = time.time()
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "reply.delta":
                result.frames += 1
                if result.first_delta is None:
                    result.first_delta = now - sent
                    result.first_at = now
                result.last_at = now
                text.append(event["delta"])
                for emitted, _index in stamps(event["delta"]):
                    result.delays.append(now - emitted)
                    result.emitted.append(emitted)
                    result.tokens += 1
            elif kind in ("reply.completed", "reply.failed", "reply.stopped"):
                message = event["message"]
                result.status = message["status"]
                result.ok = kind == "reply.completed"
                result.exact = message["content"] == "".join(text)
                if message.get("error"):
                    result.error = f"{kind}: {message['error'].get('code')}: {message['error'].get('message')}"
                return result
            elif kind == "error":
                result.error = f"{event.get('code')}: {event.get('message')}"
                return result
    except TimeoutError:
        result.error = "timeout"
    except Exception as exc:  # a dropped socket is a result, not a crash
        result.error = f"{type(exc).__name__}: {exc}"
    return result


# --- figures -----------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def summarize(results: list[StreamResult], steady_after: float | None = None) -> dict:
    """`steady_after` (unix time): also the delays of tokens emitted after it, once
    every send of the level was taken in."""
    delays = [d for r in results for d in r.delays]
    steady = [
        d
        for r in results
        for d, e in zip(r.delays, r.emitted, strict=True)
        if steady_after is not None and e >= steady_after
    ]
    firsts = [r.first_delta for r in results if r.first_delta is not None]
    rates = [
        (r.frames - 1) / (r.last_at - r.first_at)
        for r in results
        if r.frames > 1 and r.last_at > r.first_at
    ]
    return {
        "streams": len(results),
        "completed": sum(r.ok for r in results),
        "statuses": dict(collections.Counter(r.status or "none" for r in results)),
        "exact_text": sum(r.exact for r in results),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "tokens": sum(r.tokens for r in results),
        "added_delay_ms": {
            "p50": ms(pct(delays, 50)),
            "p99": ms(pct(delays, 99)),
            "max": ms(max(delays) if delays else None),
        },
        "added_delay_steady_ms": {
            "p50": ms(pct(steady, 50)),
            "p99": ms(pct(steady, 99)),
        },
        "first_delta_ms": {"p50": ms(pct(firsts, 50)), "p99": ms(pct(firsts, 99))},
        "frames_per_reply": round(statistics.mean(r.frames for r in results), 1)
        if results
        else None,
        "frames_per_second_per_stream": {
            "mean": round(statistics.mean(rates), 1) if rates else None,
            "max": round(max(rates), 1) if rates else None,
        },
    }


def write_results(name: str, payload: dict, table: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    path = RESULTS / f"{name}.md"
    path.write_text(table)
    return path


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return "—" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
