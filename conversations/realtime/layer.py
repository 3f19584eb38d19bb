"""`ChatLayer`: the project's channel layer (Channels' layer interface, groups).

Configured in `CHANNEL_LAYERS`; sockets `group_add` the dialogues they show and get
their events as consumer handler methods, `reply.stop` reaches the generating
process's control channel with `send`. Everything goes through one `Hub` per event
loop, which is also the Redis connection of the live store (conversations/realtime/
store.py):

* with a Redis URL: one command connection (PUBLISH, the live store's commands,
  pipelined) and one subscriber connection (`resp.py`). A group is the Redis channel
  `<prefix>:g:<group>`, subscribed while a socket of this process is in it; the
  channels of one process share `<prefix>:p:<process>`. A message is decoded once
  per process and the same dict is handed to every local member: handlers must not
  change it.
* without (one process, `make run`): the same, delivered in memory.

Messages are queued per channel up to `capacity` (then dropped, counted in `dropped`
and logged); they do not expire, since the consumers here read theirs at once.
Dialogue events (`chat.event`) that are waiting together for one channel when it is
read come out as one `chat.events` message listing them in order.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import uuid
import weakref
from typing import Any

from channels.layers import BaseChannelLayer

from .resp import Address, Connection, Subscriber, encode, encode_bulk

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT = 3.0
# A dialogue event: its frame (already JSON) and, for a delta, the message and seq.
EVENT = "chat.event"
# Dialogue events that were waiting together for one channel, handed over at once.
EVENTS = "chat.events"


def encode_message(message: dict[str, Any]) -> bytes:
    """A dialogue event as `E<mid> <seq>\\n<frame>`; any other message as JSON."""
    if message["type"] == EVENT and len(message) == 4:
        return b"E%d %d\n%s" % (
            message["mid"],
            message["seq"],
            message["frame"].encode(),
        )
    return b"J" + json.dumps(message, separators=(",", ":")).encode()


def decode_message(data: bytes) -> dict[str, Any]:
    if data[:1] == b"E":
        head, _, frame = data.partition(b"\n")
        mid, seq = head[1:].split()
        return {
            "type": EVENT,
            "frame": frame.decode(),
            "mid": int(mid),
            "seq": int(seq),
        }
    message: dict[str, Any] = json.loads(data[1:])
    return message


class Inbox:
    """A channel's messages, waiting for `receive`."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque[dict[str, Any]] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None

    def put(self, message: dict[str, Any]) -> None:
        self.items.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


class Hub:
    """One event loop's share of the layer: its channels, their groups, and (with
    Redis) its two connections."""

    def __init__(self, address: Address | None, prefix: bytes, capacity: int) -> None:
        self.process = uuid.uuid4().hex[:12]  # in the names of this hub's channels
        self.prefix = prefix
        self.capacity = capacity
        self.inboxes: dict[str, Inbox] = {}
        self.groups: dict[str, set[str]] = {}  # group -> local channels
        self.memberships: dict[str, set[str]] = {}  # channel -> groups
        self.dropped = 0
        self.commands: Connection | None = None
        self.subscriber: Subscriber | None = None
        self.store: Any = None  # the live store on these connections (realtime/)
        self.heads: dict[bytes, bytes] = {}  # EVAL <script> 2, encoded once
        if address is not None:
            self.commands = Connection(address, f"chatsite-{self.process}-commands")
            self.subscriber = Subscriber(
                address, self.received, f"chatsite-{self.process}-events"
            )

    # --- names ---------------------------------------------------------------------
    def group_key(self, group: str) -> bytes:
        return b"%s:g:%s" % (self.prefix, group.encode())

    def process_key(self, process: str) -> bytes:
        return b"%s:p:%s" % (self.prefix, process.encode())

    # --- local delivery --------------------------------------------------------------
    def deliver(self, channel: str, message: dict[str, Any]) -> None:
        inbox = self.inboxes.get(channel)
        if inbox is None:
            return  # a channel of a consumer that has gone
        if len(inbox.items) >= self.capacity:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "channel %s is full: message dropped (%d dropped so far)",
                    channel,
                    self.dropped,
                )
            return
        inbox.put(message)

    def deliver_group(self, group: str, message: dict[str, Any]) -> None:
        for channel in tuple(self.groups.get(group, ())):
            self.deliver(channel, message)

    def received(self, key: bytes, data: bytes) -> None:
        """A publication on the subscriber connection."""
        kind = key[len(self.prefix) + 1 : len(self.prefix) + 2]
        if kind == b"g":
            group = key[len(self.prefix) + 3 :].decode()
            if group in self.groups:
                self.deliver_group(group, decode_message(data))
        elif kind == b"p":
            channel, _, body = data.partition(b"\n")
            self.deliver(channel.decode(), decode_message(body))

    async def subscribe(self, key: bytes) -> None:
        """Subscribe, waiting a while for Redis to confirm; if it doesn't (Redis
        away), the subscription is made as soon as it is back."""
        assert self.subscriber is not None
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
                await self.subscriber.subscribe(key)
        except (TimeoutError, ConnectionError):
            log.warning("subscription to %s not confirmed in time", key.decode())

    # --- the layer's operations ------------------------------------------------------
    async def new_channel(self, prefix: str) -> str:
        if self.subscriber is not None:
            await self.subscribe(self.process_key(self.process))
        channel = f"{prefix}{self.process}!{uuid.uuid4().hex[:12]}"
        self.inboxes[channel] = Inbox()
        return channel

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        process = channel.partition("!")[0][-12:]
        if process == self.process or self.commands is None:
            self.deliver(channel, message)
            return
        body = b"%s\n%s" % (channel.encode(), encode_message(message))
        await self.commands.call(b"PUBLISH", self.process_key(process), body)

    async def receive(self, channel: str) -> dict[str, Any]:
        inbox = self.inboxes.get(channel)
        if inbox is None:
            inbox = self.inboxes[channel] = Inbox()
        try:
            message = await inbox.get()
        except asyncio.CancelledError:
            # The consumer has gone: forget its channel unless it is still in use.
            if not self.memberships.get(channel) and not inbox.items:
                self.inboxes.pop(channel, None)
            raise
        items = inbox.items
        if message["type"] == EVENT and items and items[0]["type"] == EVENT:
            # A consumer that fell behind takes what waits in one go: each
            # message costs it a few turns of the event loop, whatever its size.
            events = [message]
            while items and items[0]["type"] == EVENT:
                events.append(items.popleft())
            return {"type": EVENTS, "events": events}
        return message

    async def group_add(self, group: str, channel: str) -> None:
        self.memberships.setdefault(channel, set()).add(group)
        members = self.groups.setdefault(group, set())
        members.add(channel)
        if channel not in self.inboxes:
            self.inboxes[channel] = Inbox()
        if self.subscriber is not None:
            await self.subscribe(self.group_key(group))

    async def group_discard(self, group: str, channel: str) -> None:
        groups = self.memberships.get(channel)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self.memberships[channel]
        members = self.groups.get(group)
        if members is None:
            return
        members.discard(channel)
        if not members:
            del self.groups[group]
            if self.subscriber is not None:
                self.subscriber.unsubscribe(self.group_key(group))

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if self.commands is None:
            self.deliver_group(group, message)
            return
        await self.commands.call(
            b"PUBLISH", self.group_key(group), encode_message(message)
        )

    def group_send_nowait(
        self,
        group: str,
        message: dict[str, Any],
        script: bytes | None = None,
        key: bytes = b"",
        *args: bytes,
    ) -> bool:
        """`group_send` without waiting for Redis (the order of this hub's
        publications is kept). With `script`, the Lua script publishes it, called
        with KEYS = (key, the group's channel) and ARGV = (*args, the payload): the
        live store appends a delta and publishes it in one step (store.py). False
        (and counted) when Redis is away."""
        if self.commands is None:
            self.deliver_group(group, message)
            return True
        payload = encode_message(message)
        if script is None:
            command = encode(b"PUBLISH", self.group_key(group), payload)
        else:
            head = self.heads.get(script)
            if head is None:
                head = self.heads[script] = encode_bulk(b"EVAL", script, b"2")
            command = b"*%d\r\n%s%s" % (
                len(args) + 6,
                head,
                encode_bulk(key, self.group_key(group), *args, payload),
            )
        if self.commands.send(command):
            return True
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("Redis away: event dropped (%d dropped so far)", self.dropped)
        return False

    async def flush(self) -> None:
        self.inboxes.clear()
        self.groups.clear()
        self.memberships.clear()

    async def ping(self) -> None:
        """Both connections answer (ConnectionError/TimeoutError/RedisError if not)."""
        if self.commands is not None and self.subscriber is not None:
            await asyncio.gather(self.commands.call(b"PING"), self.subscriber.ping())

    async def close(self) -> None:
        if self.commands is not None:
            await self.commands.close()
        if self.subscriber is not None:
            await self.subscriber.close()


class ChatLayer(BaseChannelLayer):
    extensions = ["groups", "flush"]

    def __init__(
        self,
        url: str | None = None,
        prefix: str = "cs",
        capacity: int = 1000,
        expiry: int = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.address = Address.from_url(url) if url else None
        self.prefix = prefix.encode()
        self.hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = (
            weakref.WeakKeyDictionary()
        )
        # The last loop asked for and its hub: the lookup runs for every event, and
        # a weak dictionary makes a new weak reference for each.
        self.last: tuple[asyncio.AbstractEventLoop | None, Hub | None] = (None, None)

    def hub(self) -> Hub:
        """The running event loop's hub (connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        last_loop, hub = self.last
        if last_loop is loop and hub is not None:
            return hub
        hub = self.hubs.get(loop)
        if hub is None:
            hub = self.hubs[loop] = Hub(self.address, self.prefix, self.capacity)
        self.last = (loop, hub)
        return hub

    async def new_channel(self, prefix: str = "specific.") -> str:  # type: ignore[override]
        return await self.hub().new_channel(prefix)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        await self.hub().send(channel, message)

    async def receive(self, channel: str) -> dict[str, Any]:
        hub = self.hub()
        if channel not in hub.inboxes:  # a name this layer made was checked then
            self.require_valid_channel_name(channel)
        return await hub.receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.hub().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await self.hub().group_discard(group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        await self.hub().group_send(group, message)

    async def flush(self) -> None:
        await self.hub().flush()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        hub = self.hubs.pop(loop, None)
        if hub is not None:
            await hub.close()
