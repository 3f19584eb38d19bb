"""A small Redis client over asyncio streams, for the channel layer's hot path.

Why not redis-py's client: every delta of every stream is a Redis command here, and a
client call (pool checkout, command packing, response callbacks) costs more CPU than
the rest of the frame's trip (bench/results/). This one writes commands as they come
on one connection and parses every reply of a socket read at once with hiredis.

The protocol is RESP2, chosen explicitly with `HELLO 2` at connection time, so no
out-of-band (RESP3 push) frame can arrive on a command connection: each reply belongs
to the oldest command waiting. A subscriber connection (`Subscriber`) carries only
pub/sub frames; anything else there is logged and dropped. Both reconnect by
themselves (with backoff) and report a lost connection to whoever was waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 5.0


class RedisError(Exception):
    """Redis answered a command with an error."""


@dataclass(frozen=True, slots=True)
class Address:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None  # a unix socket
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> Address:
        """`redis://[[user]:password@]host[:port][/db]`, `rediss://` (TLS) or
        `unix:///path/to.sock?db=N`, as redis-py reads them."""
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        if parts.scheme == "unix":
            db = int(query.get("db", ["0"])[0])
            return cls(path=parts.path, db=db, username=username, password=password)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        path = parts.path.lstrip("/")
        db = int(path) if path else int(query.get("db", ["0"])[0])
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            db=db,
            username=username,
            password=password,
            tls=parts.scheme == "rediss",
        )


def encode(*args: bytes | str | int) -> bytes:
    """One command in RESP."""
    return b"*%d\r\n%s" % (len(args), encode_bulk(*args))


def encode_bulk(*args: bytes | str | int) -> bytes:
    """Arguments of a command in RESP, without the count that heads it: a fixed
    beginning of a command can be encoded once."""
    out = []
    for arg in args:
        data = arg if type(arg) is bytes else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def _open(
    address: Address, name: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, authenticate, choose RESP2, name the connection (CLIENT LIST shows
    it), choose the database."""
    async with asyncio.timeout(CONNECT_TIMEOUT):
        if address.path:
            reader, writer = await asyncio.open_unix_connection(address.path)
        else:
            reader, writer = await asyncio.open_connection(
                address.host,
                address.port,
                ssl=ssl.create_default_context() if address.tls else None,
            )
        hello: list[bytes | str | int] = ["HELLO", 2]
        if address.password is not None:
            hello += ["AUTH", address.username or "default", address.password]
        hello += ["SETNAME", name]
        commands = [encode(*hello)]
        if address.db:
            commands.append(encode("SELECT", address.db))
        writer.write(b"".join(commands))
        parser = hiredis.Reader()
        replies: list[Any] = []
        while len(replies) < len(commands):
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("Redis closed the connection at the handshake")
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                replies.append(reply)
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError):
                writer.close()
                raise RedisError(f"Redis refused the handshake: {reply}")
    with contextlib.suppress(OSError, AttributeError):
        sock = writer.get_extra_info("socket")
        if sock is not None and not address.path:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


class _Link:
    """One connection kept open by a task: connects (and reconnects with backoff),
    feeds every read to `on_replies`, tells `on_lost` when it drops."""

    def __init__(
        self,
        address: Address,
        name: str,
        on_replies: Callable[[list[Any]], Awaitable[None] | None],
        on_up: Callable[[asyncio.StreamWriter], None] = lambda writer: None,
        on_lost: Callable[[BaseException], None] = lambda exc: None,
    ) -> None:
        self.address, self.name = address, name
        self.on_replies, self.on_up, self.on_lost = on_replies, on_up, on_lost
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task[None] | None = None
        self.up: asyncio.Future[None] | None = None
        self.failures = 0  # connection attempts failed in a row

    def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def ready(self) -> asyncio.StreamWriter:
        """The connection's writer, once connected (ConnectionError after a while)."""
        if self.writer is not None:
            return self.writer
        self.start()
        if self.up is None or self.up.done():
            self.up = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.shield(self.up)
        except TimeoutError:
            raise ConnectionError(f"Redis ({self.name}) is not reachable") from None
        assert self.writer is not None
        return self.writer

    async def run(self) -> None:
        delay = 0.05
        while True:
            writer = None
            try:
                reader, writer = await _open(self.address, self.name)
                self.writer, delay, self.failures = writer, 0.05, 0
                self.on_up(writer)
                if self.up is not None and not self.up.done():
                    self.up.set_result(None)
                parser = hiredis.Reader()
                while data := await reader.read(65536):
                    parser.feed(data)
                    replies = []
                    while (reply := parser.gets()) is not False:
                        replies.append(reply)
                    result = self.on_replies(replies)
                    if result is not None:
                        await result
                raise ConnectionError("Redis closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if self.writer is not None or self.failures == 1:
                    log.warning("Redis connection (%s) lost: %s", self.name, exc)
                self.writer = None
                self.on_lost(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            finally:
                self.writer = None
                if writer is not None:
                    writer.close()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None


class Connection:
    """Commands on one connection, pipelined: each reply goes to the oldest waiting
    command. `call` waits for its reply; `send` does not (its reply is dropped)."""

    def __init__(self, address: Address, name: str = "commands") -> None:
        self.waiting: collections.deque[asyncio.Future[Any] | None] = (
            collections.deque()
        )
        self.link = _Link(address, name, self._replies, on_lost=self._lost)
        self.refused = 0  # fire-and-forget commands Redis answered with an error

    def start(self) -> None:
        self.link.start()

    @property
    def connected(self) -> bool:
        return self.link.writer is not None

    def send(self, command: bytes) -> bool:
        """Write an encoded command without waiting; False if not connected."""
        writer = self.link.writer
        if writer is None:
            self.link.start()
            return False
        writer.write(command)
        self.waiting.append(None)
        return True

    async def call(self, *args: bytes | str | int) -> Any:
        return await self.request(encode(*args))

    async def request(self, command: bytes) -> Any:
        """Write an encoded command and wait for its reply (RedisError, or
        ConnectionError/TimeoutError when Redis is away)."""
        writer = self.link.writer or await self.link.ready()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        writer.write(command)
        self.waiting.append(done)
        async with asyncio.timeout(REPLY_TIMEOUT):
            return await done

    def _replies(self, replies: list[Any]) -> None:
        waiting = self.waiting
        for reply in replies:
            done = waiting.popleft() if waiting else None
            error = isinstance(reply, hiredis.ReplyError)
            if done is None:
                if error:
                    self.refused += 1
                    log.warning("Redis refused a command: %s", reply)
            elif not done.done():
                if error:
                    done.set_exception(RedisError(str(reply)))
                else:
                    done.set_result(reply)

    def _lost(self, exc: BaseException) -> None:
        while self.waiting:
            done = self.waiting.popleft()
            if done is not None and not done.done():
                done.set_exception(ConnectionError(str(exc)))

    async def close(self) -> None:
        await self.link.close()


class Subscriber:
    """A subscriber connection: `subscribe` returns once Redis confirmed (so every
    later publication arrives), messages go to `on_message(channel, data)`, and the
    channels are subscribed again after a reconnection."""

    def __init__(
        self,
        address: Address,
        on_message: Callable[[bytes, bytes], None],
        name: str = "subscriber",
    ) -> None:
        self.on_message = on_message
        self.channels: set[bytes] = set()
        self.confirming: dict[bytes, asyncio.Future[None]] = {}
        self.pings: collections.deque[asyncio.Future[None]] = collections.deque()
        self.link = _Link(
            address, name, self._frames, on_up=self._resubscribe, on_lost=self._lost
        )

    @property
    def connected(self) -> bool:
        return self.link.writer is not None

    async def subscribe(self, channel: bytes) -> None:
        """Returns once Redis confirmed (the caller bounds the wait)."""
        pending = self.confirming.get(channel)
        if pending is None and channel not in self.channels:
            pending = asyncio.get_running_loop().create_future()
            self.confirming[channel] = pending
            self.channels.add(channel)
            if self.link.writer is not None:
                self.link.writer.write(encode(b"SUBSCRIBE", channel))
            else:
                self.link.start()  # once connected, it subscribes every channel
        if pending is not None:
            await asyncio.shield(pending)

    def unsubscribe(self, channel: bytes) -> None:
        self.channels.discard(channel)
        self.confirming.pop(channel, None)
        if self.link.writer is not None:
            self.link.writer.write(encode(b"UNSUBSCRIBE", channel))

    async def ping(self) -> None:
        writer = await self.link.ready()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pings.append(done)
        writer.write(encode(b"PING"))
        async with asyncio.timeout(REPLY_TIMEOUT):
            await done

    def _resubscribe(self, writer: asyncio.StreamWriter) -> None:
        # Everything wanted is (re)subscribed in one command; confirmations settle
        # the waiters as they come.
        if self.channels:
            writer.write(encode(b"SUBSCRIBE", *sorted(self.channels)))

    def _frames(self, frames: list[Any]) -> None:
        for frame in frames:
            if frame == b"PONG":  # PING answered before any subscription
                self._pong()
                continue
            if type(frame) is list and len(frame) >= 2:
                kind = frame[0]
                if kind == b"message" and len(frame) == 3:
                    self.on_message(frame[1], frame[2])
                    continue
                if kind == b"subscribe":
                    done = self.confirming.pop(frame[1], None)
                    if done is not None and not done.done():
                        done.set_result(None)
                    continue
                if kind == b"unsubscribe":
                    continue
                if kind == b"pong":
                    self._pong()
                    continue
            log.warning(
                "unexpected frame on the Redis subscriber connection: %r", frame
            )

    def _pong(self) -> None:
        if self.pings:
            done = self.pings.popleft()
            if not done.done():
                done.set_result(None)

    def _lost(self, exc: BaseException) -> None:
        # Subscriptions are made again on the next connection; waiters keep waiting
        # (up to their timeout) for that confirmation.
        for channel in self.channels:
            self.confirming.setdefault(
                channel, asyncio.get_running_loop().create_future()
            )
        while self.pings:
            done = self.pings.popleft()
            if not done.done():
                done.set_exception(ConnectionError(str(exc)))

    async def close(self) -> None:
        await self.link.close()
