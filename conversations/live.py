"""State that every server process must see: the text of replies in flight, locks,
rate windows and which processes are alive. Redis when `REDIS_URL` is set, process
memory otherwise (one process). Also the events sent to a dialogue's sockets
(through `conversations.fanout`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction

from chatsite import redisconf

from .fanout import get_hub

log = logging.getLogger(__name__)

STREAM_TTL = (
    3600  # a reply's live text outlives any stream; finished ones expire sooner
)
FINISHED_TTL = 120
WORKER_TTL = 15


def _text(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


async def broadcast(dialogue_id: int, event: dict[str, Any]) -> None:
    """Send an event to every socket showing the dialogue, on every process."""
    await get_hub().publish(dialogue_id, _text(event))


async def publish_delta(event: dict[str, Any]) -> None:
    """Record a `reply.delta` in the live text, then send it to the dialogue's sockets:
    one pipelined script per frame, not awaited (its order among the dialogue's
    events is kept; a later awaited event waits for it)."""
    await get_hub().publish(
        event["dialogue"],
        _text(event),
        mid=event["message_id"],
        seq=event["seq"],
        delta=event["delta"],
        wait=False,
    )


def broadcast_on_commit(dialogue_id: int, event: dict[str, Any]) -> None:
    """From sync code: send once the surrounding transaction commits (never a phantom)."""
    transaction.on_commit(lambda: async_to_sync(broadcast)(dialogue_id, event))


@dataclass(slots=True)
class Snapshot:
    text: str
    seq: int
    owner: str  # the control channel of the process generating it
    done: bool


class LiveStore(Protocol):
    async def stream_start(self, message_id: int, owner: str) -> None: ...
    async def stream_finish(self, message_id: int) -> None: ...
    async def snapshot(self, message_id: int) -> Snapshot | None: ...
    async def lock(self, key: str, token: str, ttl: float) -> bool: ...
    async def unlock(self, key: str, token: str) -> None: ...
    async def rate_hit(
        self, key: str, limit: int, window: int, now: float | None = None
    ) -> int: ...
    async def socket_join(self, user_id: int, member: str, cap: int) -> bool: ...
    async def socket_leave(self, user_id: int, member: str) -> None: ...
    async def socket_members(self, user_id: int) -> list[str]: ...
    async def heartbeat(self, worker: str) -> None: ...
    async def alive(self, workers: list[str]) -> set[str]: ...
    async def forget_worker(self, worker: str) -> None: ...
    async def final_park(
        self, message_id: int, dialogue_id: int, fields: dict[str, Any]
    ) -> None: ...
    async def finals(self) -> dict[int, tuple[int, dict[str, Any]]]: ...
    async def final_done(self, message_id: int) -> None: ...


class MemoryStore:
    """One process: plain dictionaries, expiry checked on read."""

    def __init__(self) -> None:
        self.streams: dict[int, Snapshot] = {}
        self.expiry: dict[Any, float] = {}
        self.locks: dict[str, str] = {}
        self.windows: dict[str, list[float]] = {}
        self.workers: set[str] = set()
        self.sockets: dict[int, set[str]] = {}
        self.parked: dict[int, tuple[int, dict[str, Any]]] = {}

    def _expired(self, key: Any) -> bool:
        deadline = self.expiry.get(key)
        return deadline is not None and deadline < time.monotonic()

    async def stream_start(self, message_id: int, owner: str) -> None:
        self.streams[message_id] = Snapshot("", 0, owner, False)
        self.expiry.pop(("s", message_id), None)

    async def stream_append(self, message_id: int, seq: int, delta: str) -> None:
        snap = self.streams[message_id]
        snap.text += delta
        snap.seq = seq

    async def stream_finish(self, message_id: int) -> None:
        if snap := self.streams.get(message_id):
            snap.done = True
            self.expiry[("s", message_id)] = time.monotonic() + FINISHED_TTL

    async def snapshot(self, message_id: int) -> Snapshot | None:
        if self._expired(("s", message_id)):
            self.streams.pop(message_id, None)
        snap = self.streams.get(message_id)
        return Snapshot(snap.text, snap.seq, snap.owner, snap.done) if snap else None

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        if key in self.locks and not self._expired(("l", key)):
            return False
        self.locks[key] = token
        self.expiry[("l", key)] = time.monotonic() + ttl
        return True

    async def unlock(self, key: str, token: str) -> None:
        if self.locks.get(key) == token:
            del self.locks[key]

    async def rate_hit(
        self, key: str, limit: int, window: int, now: float | None = None
    ) -> int:
        """A sliding window: at most `limit` hits in any `window` seconds; returns 0
        (counted) or the seconds until the next hit would be allowed."""
        now = time.time() if now is None else now
        stamps = [t for t in self.windows.get(key, []) if t > now - window]
        if len(stamps) >= limit:
            self.windows[key] = stamps
            return max(1, math.ceil(stamps[-limit] + window - now))
        stamps.append(now)
        self.windows[key] = stamps
        return 0

    async def socket_join(self, user_id: int, member: str, cap: int) -> bool:
        members = self.sockets.setdefault(user_id, set())
        if len(members) >= cap:
            return False
        members.add(member)
        return True

    async def socket_leave(self, user_id: int, member: str) -> None:
        self.sockets.get(user_id, set()).discard(member)

    async def socket_members(self, user_id: int) -> list[str]:
        return list(self.sockets.get(user_id, ()))

    async def heartbeat(self, worker: str) -> None:
        self.workers.add(worker)

    async def alive(self, workers: list[str]) -> set[str]:
        return {w for w in workers if w in self.workers}

    async def forget_worker(self, worker: str) -> None:
        self.workers.discard(worker)

    # Final states the database refused, kept until it takes them (no expiry).
    async def final_park(
        self, message_id: int, dialogue_id: int, fields: dict[str, Any]
    ) -> None:
        self.parked[message_id] = (dialogue_id, dict(fields))

    async def finals(self) -> dict[int, tuple[int, dict[str, Any]]]:
        return dict(self.parked)

    async def final_done(self, message_id: int) -> None:
        self.parked.pop(message_id, None)


_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class RedisStore:
    """Keys: `cs:s:<id>` a hash {q: seq, o: owner, d: done} and `cs:s:<id>:t` its text;
    `cs:l:*` locks;
    `cs:r:*` rate windows; `cs:w:<worker>` process heartbeats."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.p = prefix
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def r(self) -> Any:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = aioredis.from_url(
                self.url,
                socket_timeout=5,
                socket_connect_timeout=5,
                max_connections=settings.REDIS_MAX_CONNECTIONS,
                health_check_interval=redisconf.HEALTH_CHECK_INTERVAL,
                retry=redisconf.redis_retry(),
                decode_responses=False,
            )
            self._clients[loop] = client
        return client

    async def _call(self, *args: Any) -> Any:
        """A command on this loop's fan-out connection (conversations.fanout):
        pipelined, no pool checkout; the store's hot commands go this way."""
        from .fanout import RedisHub

        hub = get_hub()
        assert isinstance(hub, RedisHub)
        return await hub.call(*args)

    async def stream_start(self, message_id: int, owner: str) -> None:
        await self._call(
            "EVAL", _START, 1, f"{self.p}:s:{message_id}", owner, STREAM_TTL
        )

    async def stream_finish(self, message_id: int) -> None:
        # Only a stream that started is marked done: never create a key for one that
        # didn't (ids can come back, e.g. in a fresh test database).
        await self._call("EVAL", _FINISH, 1, f"{self.p}:s:{message_id}", FINISHED_TTL)

    async def snapshot(self, message_id: int) -> Snapshot | None:
        key = f"{self.p}:s:{message_id}"
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.get(f"{key}:t")
            data, text = await pipe.execute()
        if not data:
            return None
        return Snapshot(
            (text or b"").decode(errors="replace"),
            int(data.get(b"q", 0)),
            data.get(b"o", b"").decode(),
            data.get(b"d", b"0") == b"1",
        )

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        reply = await self._call(
            "SET", f"{self.p}:l:{key}", token, "NX", "PX", int(ttl * 1000)
        )
        return reply is not None

    async def unlock(self, key: str, token: str) -> None:
        await self._call("EVAL", _UNLOCK, 1, f"{self.p}:l:{key}", token)

    async def rate_hit(
        self, key: str, limit: int, window: int, now: float | None = None
    ) -> int:
        """A sliding window over every process: the hits of the last `window`
        seconds are a sorted set; returns 0 (counted) or the seconds to wait."""
        now_ms = int((time.time() if now is None else now) * 1000)
        wait_ms = await self._call(
            "EVAL",
            _RATE,
            1,
            f"{self.p}:r:{key}",
            now_ms,
            window * 1000,
            limit,
            f"{now_ms}-{uuid.uuid4().hex[:8]}",
        )
        return 0 if int(wait_ms) <= 0 else max(1, math.ceil(int(wait_ms) / 1000))

    async def socket_join(self, user_id: int, member: str, cap: int) -> bool:
        """Add the socket to the user's set unless it holds `cap` already (every
        process counts in the same set)."""
        added = await self._call(
            "EVAL", _SOCKET_JOIN, 1, f"{self.p}:k:{user_id}", cap, member
        )
        return bool(added)

    async def socket_leave(self, user_id: int, member: str) -> None:
        await self._call("SREM", f"{self.p}:k:{user_id}", member)

    async def socket_members(self, user_id: int) -> list[str]:
        members = await self._call("SMEMBERS", f"{self.p}:k:{user_id}")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members or ()]

    async def heartbeat(self, worker: str) -> None:
        await self.r.set(f"{self.p}:w:{worker}", 1, ex=WORKER_TTL)

    async def alive(self, workers: list[str]) -> set[str]:
        if not workers:
            return set()
        values = await self.r.mget([f"{self.p}:w:{w}" for w in workers])
        return {w for w, v in zip(workers, values, strict=True) if v is not None}

    async def forget_worker(self, worker: str) -> None:
        await self.r.delete(f"{self.p}:w:{worker}")

    # `cs:finals`: {message id: {"dialogue", "fields"}} the database refused, kept
    # (no expiry) until it takes them.
    async def final_park(
        self, message_id: int, dialogue_id: int, fields: dict[str, Any]
    ) -> None:
        payload = json.dumps({"dialogue": dialogue_id, "fields": fields})
        await self.r.hset(f"{self.p}:finals", str(message_id), payload)

    async def finals(self) -> dict[int, tuple[int, dict[str, Any]]]:
        raw = await self.r.hgetall(f"{self.p}:finals")
        parked = {}
        for key, value in raw.items():
            data = json.loads(value)
            parked[int(key)] = (int(data["dialogue"]), data["fields"])
        return parked

    async def final_done(self, message_id: int) -> None:
        await self.r.hdel(f"{self.p}:finals", str(message_id))


_START = """
redis.call('del', KEYS[1])
redis.call('hset', KEYS[1], 'q', 0, 'o', ARGV[1], 'd', 0)
redis.call('expire', KEYS[1], ARGV[2])
return redis.call('set', KEYS[1] .. ':t', '', 'EX', ARGV[2])
"""
# Sliding window: drop hits older than the window; below the limit add this one,
# else return the milliseconds until the oldest hit that counts leaves the window.
_RATE = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('zremrangebyscore', KEYS[1], '-inf', now - window)
local n = redis.call('zcard', KEYS[1])
if n < limit then
  redis.call('zadd', KEYS[1], now, ARGV[4])
  redis.call('pexpire', KEYS[1], window)
  return 0
end
local oldest = redis.call('zrange', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return tonumber(oldest[2]) + window - now
"""

_SOCKET_JOIN = """
if redis.call('scard', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
return redis.call('sadd', KEYS[1], ARGV[2]) + 1
"""

_FINISH = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], 'd', 1)
redis.call('expire', KEYS[1], ARGV[1])
return redis.call('expire', KEYS[1] .. ':t', ARGV[1])
"""


async def socket_admit(user_id: int, member: str, cap: int) -> bool:
    """Count a socket of the user on every process; False when `cap` are open. A
    full set is checked once for sockets of processes that died (their members
    start with the process's id) before the socket is refused."""
    store = get_store()
    if await store.socket_join(user_id, member, cap):
        return True
    members = await store.socket_members(user_id)
    workers = sorted({m.split(":", 1)[0] for m in members})
    alive = await store.alive(workers)
    dead = [m for m in members if m.split(":", 1)[0] not in alive]
    for stale in dead:
        await store.socket_leave(user_id, stale)
    return bool(dead) and await store.socket_join(user_id, member, cap)


_store: LiveStore | None = None


def get_store() -> LiveStore:
    global _store
    if _store is None:
        _store = (
            RedisStore(settings.REDIS_URL, settings.CHAT_LIVE_PREFIX)
            if settings.REDIS_URL
            else MemoryStore()
        )
    return _store
