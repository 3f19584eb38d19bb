"""Graceful shutdown of a daphne process on SIGTERM.

`install(application)` wraps the ASGI application (to know this process's open
websockets) and, when the process runs under daphne, replaces Twisted's SIGTERM
handler once the reactor runs. On SIGTERM the process:

1. stops listening, so the load balancer sends new connections to another process
   (nginx retries a refused connection on the next upstream);
2. closes its websockets with 4012 (restarting) so clients reconnect elsewhere
   and resume there: the reply streams continue here and reach them through Redis.
   With the in-memory channel layer there is no elsewhere, so sockets stay until
   the end and see their replies finish;
3. lets replies in flight finish within CHAT_SHUTDOWN_GRACE_SECONDS and ends the rest
   `interrupted` with their text saved (`replies_drain` of the streaming engine);
4. stops the reactor, which cancels what is left and exits.

A second SIGTERM (or SIGINT at any time) stops at once. systemd's TimeoutStopSec and
any supervisor's kill timeout must exceed the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# "The server is restarting" (docs/protocol.md): RFC 6455's 1012 in the application
# range, since daphne closes through autobahn, which refuses 1012 from a server.
SERVICE_RESTART = 4012
# Close frames need a moment to leave before the reactor drops the connections.
CLOSE_FLUSH_SECONDS = 0.5

_sockets: dict[int, Send] = {}
_state = {"draining": False, "installed": False}


def draining() -> bool:
    return _state["draining"]


def open_websockets() -> int:
    return len(_sockets)


class _TrackWebsockets:
    """ASGI middleware: remembers each websocket's `send`, refuses new ones when
    draining (the handshake fails and the client tries again, landing elsewhere)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if _state["draining"]:
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": SERVICE_RESTART})
            return
        key = id(scope)
        _sockets[key] = send
        try:
            await self.app(scope, receive, send)
        finally:
            _sockets.pop(key, None)


async def close_websockets(code: int = SERVICE_RESTART) -> int:
    """Close every open websocket of this process; returns how many."""
    sends = list(_sockets.values())
    for send in sends:
        try:
            await send({"type": "websocket.close", "code": code})
        except Exception:  # already closing: nothing to do
            log.debug("websocket close failed", exc_info=True)
    return len(sends)


def _stop_listening() -> int:
    from twisted.internet import reactor, tcp

    ports = [r for r in reactor.getReaders() if isinstance(r, tcp.Port)]
    for port in ports:
        port.stopListening()
    return len(ports)


def _cross_process_layer() -> bool:
    return bool(settings.REDIS_URL)


async def _replies_drain(grace: float) -> None:
    try:
        from conversations.services.workers import replies_drain
    except ImportError:
        log.warning(
            "the streaming engine has no replies_drain; not waiting for replies"
        )
        return
    await replies_drain(grace=grace)


async def shutdown(*, grace: float) -> None:
    """Drain this process (steps 1-3 above); the caller stops the reactor."""
    _state["draining"] = True
    listeners = _stop_listening()
    log.info(
        "SIGTERM: draining (grace %.0fs), closed %d listener(s), %d websocket(s) open",
        grace,
        listeners,
        open_websockets(),
    )
    if _cross_process_layer():
        await close_websockets()
    try:
        # replies_drain waits up to `grace`, then up to 10 s for interrupted ones
        # to save; never hang past that.
        await asyncio.wait_for(_replies_drain(grace), grace + 15)
    except Exception:
        log.exception("draining replies failed")
    closed = await close_websockets()
    if closed:
        await asyncio.sleep(CLOSE_FLUSH_SECONDS)
    from conversations.asyncdb import db_executor_shutdown

    # Each database thread closes its connection (a thread of the default pool would
    # leave it to the garbage collector).
    await asyncio.to_thread(db_executor_shutdown)
    log.info("drained; exiting")


def _on_sigterm() -> None:
    from twisted.internet import reactor

    if _state["draining"]:
        log.warning("second SIGTERM: exiting now")
        reactor.stop()
        return

    async def drain_then_stop() -> None:
        try:
            await shutdown(grace=settings.CHAT_SHUTDOWN_GRACE_SECONDS)
        finally:
            if reactor.running:
                reactor.stop()

    asyncio.ensure_future(drain_then_stop())


def _install_signal_handler() -> None:
    # Runs once the reactor runs, so after Twisted installed its own handlers:
    # this replaces only the SIGTERM one (SIGINT still stops at once).
    asyncio.get_event_loop().add_signal_handler(signal.SIGTERM, _on_sigterm)


def install(application: ASGIApp) -> ASGIApp:
    """Wrap the ASGI application and hook SIGTERM when served by daphne."""
    # Importing twisted.internet.reactor would install a default reactor; only a
    # daphne process (which installed the asyncio reactor already) gets the hook.
    if not _state["installed"] and "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        reactor.callWhenRunning(_install_signal_handler)
        _state["installed"] = True
    return _TrackWebsockets(application)
