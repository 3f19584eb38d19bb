"""The protocol over real daphne processes and a real `websockets` client, with the
fake upstream over HTTP; two processes share PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client

from conftest import fake_openai_env
from conversations.models import Message

pytestmark = pytest.mark.django_db(transaction=True)


def require_redis() -> str:
    url = os.environ.get("REDIS_URL")
    assert url, "these tests need REDIS_URL (make test sets it; CI fails without Redis)"
    return url


@database_sync_to_async
def login_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def connect(server, cookie=None, origin=None):
    """A websocket to `server`, from a page of the server's own origin by default."""
    headers = {"Origin": origin or server.http_url}
    if cookie:
        headers["Cookie"] = cookie
    return websockets.connect(server.ws_url, additional_headers=headers, max_size=2**22)


async def until(ws, kind, timeout=15):
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            frames.append(frame)
            if frame["type"] == kind:
                return frames


def send(content="hello", dialogue=None, client_id="e2e-1"):
    return json.dumps(
        {
            "type": "message.send",
            "dialogue": dialogue,
            "content": content,
            "client_id": client_id,
        }
    )


@database_sync_to_async
def fetch(message_id):
    return Message.objects.get(pk=message_id)


async def test_full_protocol_sequence_over_real_daphne(
    user, fake_openai, daphne_factory
):
    fake_openai.configure(tokens=50, tps=200)
    server = await asyncio.to_thread(daphne_factory, fake_openai_env(fake_openai))
    async with connect(server, await login_cookie(user)) as ws:
        await ws.send(send())
        frames = await until(ws, "reply.completed")
    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["dialogue.created", "message.created", "reply.started"]
    deltas = [f for f in frames if f["type"] == "reply.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    final = frames[-1]["message"]
    assert final["content"] == "".join(d["delta"] for d in deltas)
    assert final["usage"] == {
        "prompt_tokens": final["usage"]["prompt_tokens"],
        "completion_tokens": 50,
        "estimated": False,  # the fake reports usage
    }
    stored = await fetch(final["id"])
    assert stored.content == final["content"] and stored.completion_tokens == 50


async def test_handshake_refused_for_foreign_origin_and_closed_4401_without_session(
    user, daphne_factory
):
    server = await asyncio.to_thread(daphne_factory)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(
            server, await login_cookie(user), origin="http://evil.example"
        ):
            pass
    assert refused.value.response.status_code == 403
    async with connect(server) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4401


async def test_second_process_sees_the_reply_and_a_reconnect_resumes_exactly(
    user, fake_openai, daphne_factory
):
    require_redis()
    fake_openai.configure(tokens=120, tps=60)
    env = fake_openai_env(fake_openai)
    a = await asyncio.to_thread(daphne_factory, env)
    b = await asyncio.to_thread(daphne_factory, env)
    cookie = await login_cookie(user)
    async with connect(a, cookie) as tab_a:
        await tab_a.send(send())
        started = await until(tab_a, "reply.started")
        dialogue_id = started[0]["dialogue"]["id"]
        async with connect(b, cookie) as tab_b:
            await tab_b.send(
                json.dumps({"type": "dialogue.open", "dialogue": dialogue_id})
            )
            await until(tab_b, "dialogue.state")
            await until(tab_b, "reply.delta")  # B receives A's deltas
        await asyncio.sleep(0.5)  # B's socket dropped; A keeps generating
        async with connect(b, cookie) as tab_b:
            await tab_b.send(
                json.dumps({"type": "dialogue.open", "dialogue": dialogue_id})
            )
            resumed = await until(tab_b, "reply.completed", timeout=20)
        full = await until(tab_a, "reply.completed", timeout=20)
    state = resumed[0]
    streaming = state["messages"][-1]
    assert streaming["status"] == "streaming" and streaming["seq"] >= 1
    deltas = [f for f in resumed if f["type"] == "reply.delta"]
    assert deltas[0]["seq"] == streaming["seq"] + 1
    assert [d["seq"] for d in deltas] == list(
        range(deltas[0]["seq"], deltas[-1]["seq"] + 1)
    )
    assert (
        streaming["content"] + "".join(d["delta"] for d in deltas)
        == full[-1]["message"]["content"]
    )


async def test_stop_from_another_process_cancels_upstream(
    user, fake_openai, daphne_factory
):
    require_redis()
    fake_openai.configure(tokens=1000, tps=50)
    env = fake_openai_env(fake_openai)
    a = await asyncio.to_thread(daphne_factory, env)
    b = await asyncio.to_thread(daphne_factory, env)
    cookie = await login_cookie(user)
    async with connect(a, cookie) as tab_a, connect(b, cookie) as tab_b:
        await tab_a.send(send())
        dialogue_id = (await until(tab_a, "reply.started"))[0]["dialogue"]["id"]
        await until(tab_a, "reply.delta")
        await tab_b.send(json.dumps({"type": "reply.stop", "dialogue": dialogue_id}))
        stopped = (await until(tab_a, "reply.stopped"))[-1]["message"]
    assert stopped["status"] == "stopped"
    assert await asyncio.to_thread(
        fake_openai.wait_for, lambda: fake_openai.closed_early, 1.0
    )
    assert (await fetch(stopped["id"])).content == stopped["content"]


async def test_killed_process_reply_becomes_interrupted(
    user, fake_openai, daphne_factory
):
    require_redis()
    fake_openai.configure(tokens=1000, tps=50)
    env = fake_openai_env(fake_openai)
    a = await asyncio.to_thread(daphne_factory, env)
    b = await asyncio.to_thread(daphne_factory, env)
    cookie = await login_cookie(user)
    async with connect(a, cookie) as tab_a:
        await tab_a.send(send())
        started = await until(tab_a, "reply.started")
        await until(tab_a, "reply.delta")
        await asyncio.sleep(1.5)  # a checkpoint has been written
        a.kill()
    reply_id = started[-1]["message"]["id"]
    dialogue_id = started[0]["dialogue"]["id"]
    message = None
    async with connect(b, cookie) as tab_b:
        for _ in range(40):  # the dead process's heartbeat expires within seconds
            await tab_b.send(
                json.dumps({"type": "dialogue.open", "dialogue": dialogue_id})
            )
            state = (await until(tab_b, "dialogue.state"))[-1]
            message = state["messages"][-1]
            if message["status"] != "streaming":
                break
            await asyncio.sleep(0.5)
    assert message["id"] == reply_id
    assert message["status"] == "interrupted"
    assert message["content"], "the text generated before the crash is kept"
    assert (await fetch(reply_id)).status == "interrupted"
