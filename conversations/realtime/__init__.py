"""Delivery of dialogue events to every socket showing the dialogue, on every process,
and the live text of replies in flight. The only code that talks to Redis for chat.

The public surface (nothing else in this package is for use outside it):

* `broadcast(dialogue_id, event)` / `broadcast_on_commit(...)`: an event to the
  dialogue's sockets (its channel-layer group); `publish_delta(event)`: a
  `reply.delta`, appended to the live text first, in the same step.
* `snapshot(message_id)`: the live text and seq of a reply (None when unknown);
  `get_store()`: the live store (stream state, locks, rate windows, heartbeats).
* `send_control(channel, message)`: a message to a process's control channel.
* `socket_admit(user_id, member, cap)`: the per-user socket cap on every process.
* `Subscriptions`: what one socket follows (groups, seq floors, the cap).
* `healthy()`, `stats()`: the connections carrying the traffic answer; dropped events.

The channel layer is ours (`layer.ChatLayer`, configured in `CHANNEL_LAYERS`), on
Redis with `REDIS_URL` and in memory without.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from .layer import EVENT, ChatLayer, Hub
from .store import (
    APPEND_PUBLISH,
    WORKER_TTL,
    LiveStore,
    MemoryStore,
    RedisStore,
    Snapshot,
)
from .subscriptions import Subscriptions, group_name

__all__ = [
    "WORKER_TTL",
    "LiveStore",
    "Snapshot",
    "Subscriptions",
    "broadcast",
    "broadcast_on_commit",
    "channel_layer",
    "get_store",
    "healthy",
    "publish_delta",
    "send_control",
    "snapshot",
    "socket_admit",
    "stats",
]


def channel_layer() -> ChatLayer:
    layer = get_channel_layer()
    if not isinstance(layer, ChatLayer):
        raise TypeError(
            "CHANNEL_LAYERS['default'] must be conversations.realtime.layer.ChatLayer"
        )
    return layer


def _hub() -> Hub:
    return channel_layer().hub()


def _event(event: dict[str, Any], mid: int = 0, seq: int = 0) -> dict[str, Any]:
    return {
        "type": EVENT,
        "frame": json.dumps(event, separators=(",", ":")),
        "mid": mid,
        "seq": seq,
    }


async def broadcast(dialogue_id: int, event: dict[str, Any]) -> None:
    """Send an event to every socket showing the dialogue, on every process."""
    await channel_layer().group_send(group_name(dialogue_id), _event(event))


def broadcast_on_commit(dialogue_id: int, event: dict[str, Any]) -> None:
    """From sync code: send once the surrounding transaction commits (never a phantom)."""
    transaction.on_commit(lambda: async_to_sync(broadcast)(dialogue_id, event))


async def publish_delta(event: dict[str, Any]) -> None:
    """Record a `reply.delta` in the live text, then send it to the dialogue's
    sockets, in one step; returns before Redis has it (the order among the
    dialogue's events is kept)."""
    hub = _hub()
    mid, seq, delta = event["message_id"], event["seq"], event["delta"]
    message = _event(event, mid, seq)
    group = group_name(event["dialogue"])
    store = _store(hub)
    if isinstance(store, RedisStore):
        hub.group_send_nowait(
            group,
            message,
            APPEND_PUBLISH,
            store.stream_key(mid),
            delta.encode(),
            b"%d" % seq,
        )
    else:
        assert isinstance(store, MemoryStore)
        store.stream_append(mid, seq, delta)
        hub.group_send_nowait(group, message)


async def snapshot(message_id: int) -> Snapshot | None:
    return await get_store().snapshot(message_id)


async def send_control(channel: str, message: dict[str, Any]) -> None:
    await channel_layer().send(channel, message)


_memory_store = MemoryStore()  # without Redis: one process, one store


def _store(hub: Hub) -> RedisStore | MemoryStore:
    store = hub.store
    if store is None:
        if hub.commands is None:
            store = _memory_store
        else:
            store = RedisStore(hub.commands, hub.prefix.decode())
        hub.store = store
    return store


def get_store() -> LiveStore:
    """The live store of the running loop (Redis), or of the process (memory)."""
    return _store(_hub())


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


async def healthy() -> str:
    """ "ok" once this loop's Redis connections (the ones carrying events) answer a
    PING; "not configured" without Redis. Raises when they don't."""
    hub = _hub()
    if hub.commands is None:
        return "not configured"
    await hub.ping()
    return "ok"


def stats() -> dict[str, int]:
    """Events this loop's layer dropped (a full socket queue, Redis away)."""
    hub = _hub()
    refused = hub.commands.refused if hub.commands is not None else 0
    return {"dropped_events": hub.dropped, "refused_commands": refused}
