"""State every server process must see: the text of replies in flight, locks, rate
windows and which processes are alive. In Redis over the layer's command connection
of the running loop (one connection carries events and state alike), or in this
process's memory without Redis (one process).

Keys: `<prefix>:s:<id>` a hash {q: seq, o: owner, d: done} and `<prefix>:s:<id>:t`
its text; `<prefix>:l:*` locks; `<prefix>:r:*` rate windows; `<prefix>:w:<worker>`
process heartbeats.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from .resp import Connection

STREAM_TTL = (
    3600  # a reply's live text outlives any stream; finished ones expire sooner
)
FINISHED_TTL = 120
WORKER_TTL = 15


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

    def stream_append(self, message_id: int, seq: int, delta: str) -> None:
        snap = self.streams.get(message_id)
        if snap is not None:
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


class RedisStore:
    """The live store on one command connection (the running loop's)."""

    def __init__(self, redis: Connection, prefix: str) -> None:
        self.redis = redis
        self.p = prefix

    def stream_key(self, message_id: int) -> bytes:
        return f"{self.p}:s:{message_id}".encode()

    async def stream_start(self, message_id: int, owner: str) -> None:
        await self.redis.call(
            "EVAL", START, 1, self.stream_key(message_id), owner, STREAM_TTL
        )

    async def stream_finish(self, message_id: int) -> None:
        # Only a stream that started is marked done: never create a key for one that
        # didn't (ids can come back, e.g. in a fresh test database).
        await self.redis.call(
            "EVAL", FINISH, 1, self.stream_key(message_id), FINISHED_TTL
        )

    async def snapshot(self, message_id: int) -> Snapshot | None:
        reply = await self.redis.call("EVAL", SNAPSHOT, 1, self.stream_key(message_id))
        if not reply:
            return None
        seq, owner, done, text = reply
        return Snapshot(
            text.decode(errors="replace"), int(seq), owner.decode(), done == b"1"
        )

    async def lock(self, key: str, token: str, ttl: float) -> bool:
        reply = await self.redis.call(
            "SET", f"{self.p}:l:{key}", token, "NX", "PX", int(ttl * 1000)
        )
        return reply is not None

    async def unlock(self, key: str, token: str) -> None:
        await self.redis.call("EVAL", UNLOCK, 1, f"{self.p}:l:{key}", token)

    async def rate_hit(
        self, key: str, limit: int, window: int, now: float | None = None
    ) -> int:
        """A sliding window over every process: the hits of the last `window`
        seconds are a sorted set; returns 0 (counted) or the seconds to wait."""
        now_ms = int((time.time() if now is None else now) * 1000)
        wait_ms = await self.redis.call(
            "EVAL",
            RATE,
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
        added = await self.redis.call(
            "EVAL", SOCKET_JOIN, 1, f"{self.p}:k:{user_id}", cap, member
        )
        return bool(added)

    async def socket_leave(self, user_id: int, member: str) -> None:
        await self.redis.call("SREM", f"{self.p}:k:{user_id}", member)

    async def socket_members(self, user_id: int) -> list[str]:
        members = await self.redis.call("SMEMBERS", f"{self.p}:k:{user_id}")
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members or ()]

    async def heartbeat(self, worker: str) -> None:
        await self.redis.call("SET", f"{self.p}:w:{worker}", 1, "EX", WORKER_TTL)

    async def alive(self, workers: list[str]) -> set[str]:
        if not workers:
            return set()
        values = await self.redis.call("MGET", *(f"{self.p}:w:{w}" for w in workers))
        return {w for w, v in zip(workers, values, strict=True) if v is not None}

    async def forget_worker(self, worker: str) -> None:
        await self.redis.call("DEL", f"{self.p}:w:{worker}")

    # `cs:finals`: {message id: {"dialogue", "fields"}} the database refused, kept
    # (no expiry) until it takes them.
    async def final_park(
        self, message_id: int, dialogue_id: int, fields: dict[str, Any]
    ) -> None:
        payload = json.dumps({"dialogue": dialogue_id, "fields": fields})
        await self.redis.call("HSET", f"{self.p}:finals", str(message_id), payload)

    async def finals(self) -> dict[int, tuple[int, dict[str, Any]]]:
        raw = await self.redis.call("HGETALL", f"{self.p}:finals") or []
        parked = {}
        for key, value in zip(raw[::2], raw[1::2], strict=True):
            data = json.loads(value)
            parked[int(key)] = (int(data["dialogue"]), data["fields"])
        return parked

    async def final_done(self, message_id: int) -> None:
        await self.redis.call("HDEL", f"{self.p}:finals", str(message_id))


START = """
redis.call('del', KEYS[1])
redis.call('hset', KEYS[1], 'q', 0, 'o', ARGV[1], 'd', 0)
redis.call('expire', KEYS[1], ARGV[2])
return redis.call('set', KEYS[1] .. ':t', '', 'EX', ARGV[2])
"""
FINISH = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
redis.call('hset', KEYS[1], 'd', 1)
redis.call('expire', KEYS[1], ARGV[1])
return redis.call('expire', KEYS[1] .. ':t', ARGV[1])
"""
SNAPSHOT = """
local state = redis.call('hmget', KEYS[1], 'q', 'o', 'd')
if not state[1] then return nil end
return {state[1], state[2], state[3], redis.call('get', KEYS[1] .. ':t') or ''}
"""
UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
# Sliding window: drop hits older than the window; below the limit add this one,
# else return the milliseconds until the oldest hit that counts leaves the window.
RATE = """
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
SOCKET_JOIN = """
if redis.call('scard', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
return redis.call('sadd', KEYS[1], ARGV[2]) + 1
"""
# Append a delta to the live text (hash `q` = seq, `<key>:t` = text) and publish it in
# one step: a reader of the live text never misses a delta published after its read.
# A stream whose key vanished (Redis restarted) is not recreated from a middle piece:
# readers then fall back to the database checkpoint.
APPEND_PUBLISH = b"""
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], 'q', ARGV[2])
  redis.call('append', KEYS[1] .. ':t', ARGV[1])
end
return redis.call('publish', KEYS[2], ARGV[3])
"""
