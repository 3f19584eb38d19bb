"""Per-user bounds on sockets and on the database work sockets ask for (issue 14,
items 2 and 3)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from conversations import selectors
from conversations.tests.conftest import HOST, ORIGIN, session_cookie
from tests.factories import DialogueFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def _connect(user):
    from chatsite.asgi import application

    cookie = f"{django_settings.SESSION_COOKIE_NAME}={await session_cookie(user)}"
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[HOST, ORIGIN, (b"cookie", cookie.encode())],
    )
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    return communicator


async def test_a_user_has_at_most_the_socket_cap_open(user, other_user, settings):
    settings.CHAT_MAX_SOCKETS_PER_USER = 3
    sockets = [await _connect(user) for _ in range(3)]
    try:
        for ws in sockets:
            await ws.send_json_to({"type": "ping"})
            assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
        extra = await _connect(user)
        closed = await extra.receive_output(timeout=5)
        assert closed == {
            "type": "websocket.close",
            "code": 4429,
            "reason": "too many sockets",
        }
        # Another user is not affected; a closed socket makes room.
        theirs = await _connect(other_user)
        await theirs.send_json_to({"type": "ping"})
        assert (await theirs.receive_json_from(timeout=5))["type"] == "pong"
        await theirs.disconnect()
        await sockets.pop().disconnect()
        again = await _connect(user)
        await again.send_json_to({"type": "ping"})
        assert (await again.receive_json_from(timeout=5))["type"] == "pong"
        sockets.append(again)
    finally:
        for ws in sockets:
            await ws.disconnect()


async def test_sockets_of_a_dead_process_do_not_count(user, settings):
    from conversations.realtime import get_store, socket_admit

    settings.CHAT_MAX_SOCKETS_PER_USER = 2
    store = get_store()
    # Two sockets left behind by a process that no longer heartbeats.
    assert await socket_admit(user.pk, "deadworker:a", 2)
    assert await socket_admit(user.pk, "deadworker:b", 2)
    ws = await _connect(user)
    try:
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from(timeout=5))["type"] == "pong"
        assert not [m for m in await store.socket_members(user.pk) if "dead" in m]
    finally:
        await ws.disconnect()


async def test_one_user_s_socket_reads_run_at_most_chat_user_reads_at_once(
    user, settings, monkeypatch
):
    settings.CHAT_USER_READS = 2
    settings.CHAT_MAX_SOCKETS_PER_USER = 100
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    running = {"now": 0, "most": 0, "calls": 0}
    lock = threading.Lock()
    page = selectors.message_page

    def slow_page(**kwargs):
        with lock:
            running["now"] += 1
            running["calls"] += 1
            running["most"] = max(running["most"], running["now"])
        try:
            time.sleep(0.05)  # a read that takes a while: reads overlap if allowed
            return page(**kwargs)
        finally:
            with lock:
                running["now"] -= 1

    monkeypatch.setattr(selectors, "message_page", slow_page)
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for _ in range(12):
            ws = await _connect(user)
            stack.push_async_callback(ws.disconnect)
            sockets.append(ws)
        for ws in sockets:
            await ws.send_json_to({"type": "dialogue.open", "dialogue": dialogue.pk})
        states = await asyncio.gather(
            *(ws.receive_json_from(timeout=30) for ws in sockets)
        )
    assert [s["type"] for s in states] == ["dialogue.state"] * 12
    assert running["calls"] == 12
    assert running["most"] <= 2
