"""Delivery of a dialogue's events to every socket showing it, on every process.

The hot path of the product: every `reply.delta` of every stream goes through here.
A socket joins the dialogues it shows; an event published to a dialogue reaches the
`deliver` of each joined socket, on this process and on every other one, in the order
it was published.

With Redis, each process keeps one connection that publishes (commands written as
they come, replies parsed in batches, no client call per frame) and one that
subscribes to the channels of the dialogues its sockets show. A message is handed
straight to those sockets: no channel-layer queue, no msgpack, no consumer dispatch
(which also opens a database thread per message to close old connections); together
those cost more CPU per frame than everything else the server does with it.
A delta's text is appended to the live store and published by one script, so a socket
that reads the live text after joining misses nothing (protocol guarantee 2).
Without Redis, publishing hands the event to this process's sockets directly.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from django.conf import settings

log = logging.getLogger(__name__)

SUBSCRIBE_CONFIRM_SECONDS = 3.0


class Receiver(Protocol):
    """A socket: `mid`/`seq` identify a delta (0 for other events), `data` is the
    frame's text, serialised and UTF-8 encoded once for every socket."""

    async def deliver(self, mid: int, seq: int, data: bytes) -> None: ...


class Hub:
    """This process's sockets, by dialogue."""

    def __init__(self) -> None:
        self.members: dict[int, set[Receiver]] = {}

    async def join(self, dialogue_id: int, receiver: Receiver) -> None:
        self.members.setdefault(dialogue_id, set()).add(receiver)

    async def leave(self, dialogue_id: int, receiver: Receiver) -> None:
        members = self.members.get(dialogue_id)
        if members is not None:
            members.discard(receiver)
            if not members:
                del self.members[dialogue_id]

    async def publish(
        self,
        dialogue_id: int,
        text: str,
        *,
        mid: int = 0,
        seq: int = 0,
        delta: str | None = None,
        wait: bool = True,
    ) -> None:
        """Send `text` to the dialogue's sockets; with `delta`, first append it to the
        live text of message `mid` as its `seq`. `wait=False` returns before Redis
        has it (the order of publications is kept either way)."""
        if delta is not None:
            from .live import MemoryStore, get_store

            store = get_store()
            assert isinstance(store, MemoryStore)  # Redis: RedisHub appends
            await store.stream_append(mid, seq, delta)
        await self.deliver_local(dialogue_id, mid, seq, text.encode())

    async def deliver_local(
        self, dialogue_id: int, mid: int, seq: int, data: bytes
    ) -> None:
        for receiver in tuple(self.members.get(dialogue_id, ())):
            try:
                await receiver.deliver(mid, seq, data)
            except Exception:  # one broken socket must not starve the others
                log.warning("delivery to a socket failed", exc_info=True)


def _command(*args: bytes) -> bytes:
    """A command in the Redis protocol (RESP)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Link:
    """One Redis connection, written and read directly: redis-py opens it (address,
    password, TLS and database from REDIS_URL), hiredis parses all the replies of a
    socket read at once, and it reconnects by itself. Far less CPU per message than a
    client call, which matters at thousands of frames a second."""

    CONNECT_TIMEOUT = 5.0

    def __init__(
        self,
        url: str,
        name: str,
        handle: Callable[[list[Any]], Awaitable[None]],
        greet: Callable[[], bytes] = lambda: b"",
        lost: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.url, self.name = url, name
        self.handle, self.greet, self.lost = handle, greet, lost
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self._up: asyncio.Future[None] | None = None

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def ready(self) -> asyncio.StreamWriter:
        """The connection's writer, once connected (ConnectionError after a while)."""
        if self.writer is not None:
            return self.writer
        self.start()
        if self._up is None or self._up.done():
            self._up = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self.CONNECT_TIMEOUT):
                await asyncio.shield(self._up)
        except TimeoutError:
            raise ConnectionError(f"Redis ({self.name}) is not reachable") from None
        assert self.writer is not None
        return self.writer

    async def _run(self) -> None:
        import hiredis
        from redis.asyncio import ConnectionPool

        pool = ConnectionPool.from_url(
            self.url,
            socket_timeout=None,
            socket_connect_timeout=self.CONNECT_TIMEOUT,
            socket_keepalive=True,
        )
        delay = 0.05
        while True:
            connection = pool.make_connection()
            try:
                await connection.connect()
                reader, writer = connection._reader, connection._writer
                parser = hiredis.Reader()
                if greeting := self.greet():
                    writer.write(greeting)
                self.writer, delay = writer, 0.05
                if self._up is not None and not self._up.done():
                    self._up.set_result(None)
                while data := await reader.read(65536):
                    parser.feed(data)
                    replies = []
                    while (reply := parser.gets()) is not False:
                        replies.append(reply)
                    await self.handle(replies)
                raise ConnectionError("Redis closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.writer is not None:
                    log.warning("Redis connection (%s) lost: %s", self.name, exc)
                self.writer = None
                self.lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                self.writer = None
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)


class RedisHub(Hub):
    """Hub whose publications go through Redis to every process (one per event loop)."""

    PUBLISH_TIMEOUT = 5.0

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix.encode()
        self._replies: collections.deque[asyncio.Future[Any] | None] = (
            collections.deque()
        )
        self._channels: set[bytes] = set()
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        self._pub = _Link(url, "publish", self._published, lost=self._publish_lost)
        self._sub = _Link(url, "subscribe", self._received, greet=self._resubscribe)
        self._dropped = 0

    def channel(self, dialogue_id: int) -> bytes:
        return b"%s:d:%d" % (self.prefix, dialogue_id)

    # --- publishing ------------------------------------------------------------------
    async def publish(
        self,
        dialogue_id: int,
        text: str,
        *,
        mid: int = 0,
        seq: int = 0,
        delta: str | None = None,
        wait: bool = True,
    ) -> None:
        payload = b"%d %d %d\n%s" % (dialogue_id, mid, seq, text.encode())
        if delta is None:
            command = _command(b"PUBLISH", self.channel(dialogue_id), payload)
        else:
            key = b"%s:s:%d" % (self.prefix, mid)
            channel = self.channel(dialogue_id)
            text_bytes = delta.encode()
            seq_bytes = b"%d" % seq
            command = (
                b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                % (
                    _EVAL_APPEND_PUBLISH,
                    len(key),
                    key,
                    len(channel),
                    channel,
                    len(text_bytes),
                    text_bytes,
                    len(seq_bytes),
                    seq_bytes,
                    len(payload),
                    payload,
                )
            )
        writer = self._pub.writer
        if not wait:
            if writer is None:
                # Redis away: the reply goes on and is saved; sockets that missed
                # frames catch up with dialogue.open.
                self._pub.start()
                self._dropped += 1
                return
            writer.write(command)
            self._replies.append(None)
            return
        await self._request(command)

    async def call(self, *args: bytes | str | int) -> Any:
        """Any Redis command over the publishing connection (pipelined with the
        frames, no pool checkout): the live store's hot commands use it."""
        return await self._request(
            _command(*(a if type(a) is bytes else str(a).encode() for a in args))  # type: ignore[misc]
        )

    async def _request(self, command: bytes) -> Any:
        """Write `command` on the publishing connection and wait for its reply."""
        writer = self._pub.writer or await self._pub.ready()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.write(command)
        self._replies.append(done)
        async with asyncio.timeout(self.PUBLISH_TIMEOUT):
            return await done

    async def _published(self, replies: list[Any]) -> None:
        for reply in replies:
            done = self._replies.popleft() if self._replies else None
            if isinstance(reply, Exception):
                log.warning("publication refused by Redis: %s", reply)
            if done is not None and not done.done():
                if isinstance(reply, Exception):
                    done.set_exception(reply)
                else:
                    done.set_result(reply)

    def _publish_lost(self, exc: BaseException) -> None:
        while self._replies:
            done = self._replies.popleft()
            if done is not None and not done.done():
                done.set_exception(ConnectionError(str(exc)))

    # --- subscribing -----------------------------------------------------------------
    async def join(self, dialogue_id: int, receiver: Receiver) -> None:
        """Return once this process receives every later publication to the dialogue:
        Redis applies a SUBSCRIBE when it reaches the server, and its confirmation
        comes back on the subscribing connection before any later message does."""
        first = dialogue_id not in self.members
        await super().join(dialogue_id, receiver)
        channel = self.channel(dialogue_id)
        pending = self._confirming.get(channel)
        if first and pending is None and channel not in self._channels:
            pending = asyncio.get_running_loop().create_future()
            self._confirming[channel] = pending
            self._channels.add(channel)
            try:
                writer = await self._sub.ready()
            except ConnectionError:
                log.warning("could not subscribe to %s", channel)
                return
            writer.write(_command(b"SUBSCRIBE", channel))
        if pending is not None:
            try:
                async with asyncio.timeout(SUBSCRIBE_CONFIRM_SECONDS):
                    await asyncio.shield(pending)
            except TimeoutError:
                log.warning("subscription to %s not confirmed in time", channel)

    async def leave(self, dialogue_id: int, receiver: Receiver) -> None:
        await super().leave(dialogue_id, receiver)
        if dialogue_id not in self.members:
            channel = self.channel(dialogue_id)
            self._channels.discard(channel)
            self._confirming.pop(channel, None)
            if self._sub.writer is not None:
                self._sub.writer.write(_command(b"UNSUBSCRIBE", channel))

    def _resubscribe(self) -> bytes:
        """After a (re)connection: every channel this process's sockets need."""
        if not self._channels:
            return b""
        return _command(b"SUBSCRIBE", *sorted(self._channels))

    async def _received(self, replies: list[Any]) -> None:
        for reply in replies:
            if not isinstance(reply, list) or len(reply) < 3:
                continue
            kind = reply[0]
            if kind == b"message":
                head, _, body = reply[2].partition(b"\n")
                dialogue_id, mid, seq = (int(x) for x in head.split())
                if dialogue_id in self.members:
                    await self.deliver_local(dialogue_id, mid, seq, body)
            elif kind == b"subscribe":
                confirmation = self._confirming.pop(reply[1], None)
                if confirmation is not None and not confirmation.done():
                    confirmation.set_result(None)


# Append a delta to the live text (hash `q` = seq, `<key>:t` = text) and publish it in
# one step: a reader of the live text never misses a delta published after its read.
# A stream whose key vanished (Redis restarted) is not recreated from a middle piece:
# readers then fall back to the database checkpoint.
_APPEND_PUBLISH = b"""
if redis.call('exists', KEYS[1]) == 1 then
  redis.call('hset', KEYS[1], 'q', ARGV[2])
  redis.call('append', KEYS[1] .. ':t', ARGV[1])
end
return redis.call('publish', KEYS[2], ARGV[3])
"""

# EVAL <script> 2 <key> <channel> <delta> <seq> <payload>: the fixed head, once.
_EVAL_APPEND_PUBLISH = b"*8\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n2\r\n" % (
    len(_APPEND_PUBLISH),
    _APPEND_PUBLISH,
)

_memory_hub: Hub | None = None
_redis_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RedisHub] = (
    weakref.WeakKeyDictionary()
)


def get_hub() -> Hub:
    """The hub of the running event loop (Redis connections belong to one loop)."""
    global _memory_hub
    if not settings.REDIS_URL:
        if _memory_hub is None:
            _memory_hub = Hub()
        return _memory_hub
    loop = asyncio.get_running_loop()
    hub = _redis_hubs.get(loop)
    if hub is None:
        hub = RedisHub(settings.REDIS_URL, settings.CHAT_LIVE_PREFIX)
        _redis_hubs[loop] = hub
    return hub
