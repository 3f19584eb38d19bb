"""A socket lives only as long as the session it was opened with.

A websocket is authenticated once, at the handshake; Django's log-out, a password
change (which changes the session auth hash), deactivation or the session's expiry
must still end it. Each process keeps a `SessionWatch` of its sockets by user:

- Django's auth events publish a revocation for the user on the channel layer group
  `chatsite.sessions` (every process hears it): `user_logged_out` names the session
  (its sockets close at once), and any save or deletion of a user has that user's
  sockets re-check their session shortly after (a password change or deactivation
  shows there; a log-in that only bumps `last_login` leaves them open).
- A socket re-checks at its session's expiry date and every `SESSION_RECHECK_SECONDS`
  (a session deleted in the admin or by `clearsessions` sends no event).
- The consumer re-checks before any work (`SessionWatch.valid`).

A socket whose session no longer authenticates its user is closed with 4401. These
are Django signals because Django's auth offers no other hook for these events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib import import_module
from types import SimpleNamespace
from typing import Any, Protocol

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user, get_user_model, user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from .asyncdb import db_async

log = logging.getLogger(__name__)

GROUP = "chatsite.sessions"
CLOSE_CODE = 4401
# A revocation is checked this long after the event: Django's `logout()` deletes the
# session after its signal, and a password change stores the new hash in the
# changer's own session after the user is saved.
SETTLE_SECONDS = 1.0
# How often the sweep looks for expired sessions and sockets due for a re-check.
SWEEP_SECONDS = 1.0


class WatchedSocket(Protocol):
    session_key: str | None
    user_id: int

    async def session_closed(self) -> None: ...


def _store(session_key: str) -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)


def session_user_id(session_key: str | None) -> int | None:
    """The id of the user the session still authenticates (active, hash current,
    not expired), else None. Django's own `get_user`, on a fresh read."""
    if not session_key:
        return None
    user = get_user(SimpleNamespace(session=_store(session_key)))  # type: ignore[arg-type]
    return user.pk if user.is_authenticated else None


def session_expiry(session_key: str | None) -> float | None:
    """The session's expiry as a Unix time, or None."""
    if not session_key:
        return None
    return _store(session_key).get_expiry_date().timestamp()


_session_user_id = db_async(session_user_id)
_session_expiry = db_async(session_expiry)


# --- publishing (sync: Django's signals fire in request threads) ----------------------


def sessions_revoke(*, user_id: int, session_key: str | None = None) -> None:
    """Tell every process to re-check `user_id`'s sockets (and to close the ones of
    `session_key` at once), after the current transaction commits."""
    message = {"type": "session.revoke", "user": user_id, "session": session_key or ""}

    def publish() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(GROUP, message)
        except Exception:
            # The periodic re-check still closes the sockets; the request goes on.
            log.warning("session revocation not published", exc_info=True)

    transaction.on_commit(publish)


def _on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and getattr(request, "session", None) is not None:
        sessions_revoke(user_id=user.pk, session_key=request.session.session_key)


def _on_user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    if kwargs.get("raw") or instance.pk is None:
        return
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= {"last_login"}:
        return  # every log-in saves this; it revokes nothing
    sessions_revoke(user_id=instance.pk)


def connect_signals() -> None:
    user_model = get_user_model()
    user_logged_out.connect(_on_logged_out, dispatch_uid="socket-sessions-logout")
    post_save.connect(
        _on_user_changed, sender=user_model, dispatch_uid="socket-sessions-save"
    )
    post_delete.connect(
        _on_user_changed, sender=user_model, dispatch_uid="socket-sessions-delete"
    )


# --- the per-process watch -------------------------------------------------------------


class SessionWatch:
    def __init__(self) -> None:
        self.sockets: dict[int, set[WatchedSocket]] = {}
        self.expiry: dict[WatchedSocket, float] = {}
        self.checked: dict[WatchedSocket, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def add(self, socket: WatchedSocket) -> None:
        await self._ensure_started()
        self.sockets.setdefault(socket.user_id, set()).add(socket)
        self.checked[socket] = time.time()
        with contextlib.suppress(Exception):  # a database blip: the sweep retries
            expiry = await _session_expiry(socket.session_key)
            if expiry is not None:
                self.expiry[socket] = expiry

    def remove(self, socket: WatchedSocket) -> None:
        sockets = self.sockets.get(getattr(socket, "user_id", None))  # type: ignore[arg-type]
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self.sockets[socket.user_id]
        self.expiry.pop(socket, None)
        self.checked.pop(socket, None)

    async def valid(self, socket: WatchedSocket) -> bool:
        """Whether the socket's session still authenticates its user. A database
        that cannot answer is not a revocation (the caller's work fails on its own)."""
        try:
            user_id = await _session_user_id(socket.session_key)
        except Exception:
            log.warning("session check failed", exc_info=True)
            return True
        self.checked[socket] = time.time()
        return user_id == socket.user_id

    async def check(self, socket: WatchedSocket) -> None:
        if not await self.valid(socket):
            await self._close(socket)

    async def _close(self, socket: WatchedSocket) -> None:
        self.remove(socket)
        try:
            await socket.session_closed()
        except Exception:
            log.warning("closing a revoked socket failed", exc_info=True)

    async def revoked(self, *, user_id: int, session_key: str) -> None:
        sockets = list(self.sockets.get(user_id, ()))
        for socket in sockets:
            if session_key and socket.session_key == session_key:
                await self._close(socket)
        await asyncio.sleep(SETTLE_SECONDS)
        for socket in list(self.sockets.get(user_id, ())):
            await self.check(socket)

    async def sweep(self, *, now: float) -> None:
        """Re-check sockets whose session expired or was not checked for a while."""
        interval = settings.SESSION_RECHECK_SECONDS
        due = [
            socket
            for socket, checked in list(self.checked.items())
            if now >= self.expiry.get(socket, float("inf")) or now - checked >= interval
        ]
        for socket in due:
            await self.check(socket)
            expiry = self.expiry.get(socket)
            if expiry is not None and now >= expiry:
                # still valid past the old date: the session was extended
                with contextlib.suppress(Exception):
                    new = await _session_expiry(socket.session_key)
                    if new is not None:
                        self.expiry[socket] = new

    async def stop(self) -> None:
        """Cancel this loop's tasks (tests: each has its own loop)."""
        tasks, self._tasks, self._loop = self._tasks, [], None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        # A new event loop (tests run one per test) gets fresh tasks and sockets.
        self._loop = loop
        self.sockets, self.expiry, self.checked = {}, {}, {}
        layer = get_channel_layer()
        channel = None
        if layer is not None:
            channel = await layer.new_channel("chatsite.sessions.")
            await layer.group_add(GROUP, channel)
        self._tasks = [loop.create_task(self._sweep_loop())]
        if channel is not None:
            self._tasks.append(loop.create_task(self._listen(channel)))

    async def _listen(self, channel: str) -> None:
        layer = get_channel_layer()
        assert layer is not None
        while True:
            try:
                message = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("session revocations: receive failed", exc_info=True)
                await asyncio.sleep(1)
                with contextlib.suppress(Exception):
                    await layer.group_add(GROUP, channel)
                continue
            if message.get("type") == "session.revoke":
                asyncio.get_running_loop().create_task(
                    self.revoked(
                        user_id=int(message["user"]),
                        session_key=str(message.get("session") or ""),
                    )
                )

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep(now=time.time())
            except Exception:
                log.warning("session sweep failed", exc_info=True)


_watch = SessionWatch()


def get_watch() -> SessionWatch:
    return _watch
