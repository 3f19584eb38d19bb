"""Fault tests through the real nginx cluster (two daphne processes, shared
PostgreSQL through a cuttable proxy, a private Redis): nothing is lost, nothing stays
`streaming`, and the processes survive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import pytest
from asgiref.sync import sync_to_async

from conversations.models import Message
from tests.cluster.conftest import Client, session_cookie, tokens_text
from tests.factories import DialogueFactory, UserFactory

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]


@sync_to_async
def _user_and_cookie() -> tuple[object, str]:
    user = UserFactory()
    return user, session_cookie(user)


@sync_to_async
def _dialogue(user) -> int:
    return DialogueFactory(owner=user).pk


@sync_to_async
def _assistant(dialogue_id: int) -> Message | None:
    return (
        Message.objects.filter(dialogue_id=dialogue_id, role="assistant")
        .order_by("-id")
        .first()
    )


async def _state(url: str, cookie: str, dialogue_id: int) -> dict:
    client = await Client.open(url, cookie)
    try:
        await client.send({"type": "dialogue.open", "dialogue": dialogue_id})
        return await client.until("dialogue.state")
    finally:
        await client.close()


async def _wait_final(dialogue_id: int, timeout: float) -> Message:
    deadline = time.monotonic() + timeout
    while True:
        message = await _assistant(dialogue_id)
        if message is not None and message.status != "streaming":
            return message
        if time.monotonic() > deadline:
            pytest.fail(f"reply still {message and message.status} after {timeout}s")
        await asyncio.sleep(0.25)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_nginx_balances_round_robin_and_serves_static_files_with_debug_off(
    fault_cluster,
):
    cluster = fault_cluster.cluster

    pids = {
        json.loads(_get(f"{cluster.url}/healthz?detail=1")[1])["process"]["pid"]
        for _ in range(4)
    }
    manifest = json.loads((cluster.root / "static" / "staticfiles.json").read_text())
    hashed = next(iter(manifest["paths"].values()))
    status, body = _get(f"{cluster.url}/static/{hashed}")

    assert pids == {b.pid for b in cluster.backends}
    assert status == 200 and body


async def test_killed_process_leaves_its_reply_interrupted_and_client_resumes_elsewhere(
    fault_cluster,
):
    # given a reply streaming on backend 0
    user, cookie = await _user_and_cookie()
    dialogue_id = await _dialogue(user)
    client = await Client.open(fault_cluster.backend_ws(0), cookie)
    await client.send_message(dialogue_id, "[[fake tokens=400 tps=40]] tell me")
    for _ in range(5):
        await client.until("reply.delta")

    # when that process is killed with SIGKILL mid-stream
    fault_cluster.cluster.kill_backend(0, signal.SIGKILL)
    await client.close()

    try:
        # then the client reconnects through nginx (to the surviving process) and sees
        # the reply end `interrupted`, with the text saved so far, never `streaming`
        watcher = await Client.open(fault_cluster.cluster.ws_url, cookie)
        await watcher.send({"type": "dialogue.open", "dialogue": dialogue_id})
        state = await watcher.until("dialogue.state")
        assert state["messages"][-1]["status"] in ("streaming", "interrupted")
        message = await _wait_final(dialogue_id, timeout=40)
        await watcher.close()
        state = await _state(fault_cluster.cluster.ws_url, cookie, dialogue_id)

        assert message.status == "interrupted"
        assert tokens_text(400).startswith(message.content)
        assert state["messages"][-1]["status"] == "interrupted"
        assert state["messages"][-1]["content"] == message.content
    finally:
        fault_cluster.cluster.restart_backend(0)


async def test_final_save_is_retried_while_postgresql_is_unreachable(fault_cluster):
    # given a reply streaming through nginx
    user, cookie = await _user_and_cookie()
    dialogue_id = await _dialogue(user)
    client = await Client.open(fault_cluster.cluster.ws_url, cookie)
    await client.send_message(dialogue_id, "[[fake tokens=60 tps=40]] save me")
    await client.until("reply.delta")

    # when PostgreSQL becomes unreachable until after the stream has ended
    fault_cluster.pg.cut()
    try:
        await asyncio.sleep(3)  # the upstream finishes meanwhile (1.5 s)
        status, body = await asyncio.to_thread(
            _get, f"{fault_cluster.cluster.url}/healthz"
        )
        assert status == 503 and json.loads(body)["database"] == "error"
    finally:
        fault_cluster.pg.restore()

    # then the full text is saved once the database is back: never truncated silently
    completed = await client.until("reply.completed", "reply.failed", timeout=40)
    await client.close()
    message = await _wait_final(dialogue_id, timeout=10)
    assert completed["type"] == "reply.completed"
    assert message.status == "complete"
    assert message.content == tokens_text(60)


async def test_a_long_outage_loses_no_text_and_answers_unavailable(fault_cluster):
    """PostgreSQL away far longer than the final save's retries: the tabs are told at
    once (reply.failed, full text), sends and handshakes answer `unavailable`, and
    the full text is saved from Redis when the database is back."""
    import websockets

    cluster = fault_cluster.cluster
    user, cookie = await _user_and_cookie()
    dialogue_id = await _dialogue(user)
    client = await Client.open(cluster.ws_url, cookie)
    await client.send_message(dialogue_id, "[[fake tokens=60 tps=40]] keep me")
    await client.until("reply.delta")

    fault_cluster.pg.cut()
    try:
        failed = await client.until("reply.failed", timeout=30)
        await client.send_message(dialogue_id, "a send during the outage")
        refused = await client.until("error", timeout=20)
        late = await Client.open(cluster.ws_url, cookie)
        greeting = await late.recv(timeout=20)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await late.recv(timeout=5)
        await asyncio.sleep(10)  # a long outage: well past every retry
        assert (await _assistant_after_restore_check(dialogue_id)) is None
    finally:
        fault_cluster.pg.restore()

    completed = await client.until("reply.completed", timeout=40)
    await client.close()
    message = await _wait_final(dialogue_id, timeout=10)
    assert failed["message"]["content"] == tokens_text(60)
    assert failed["message"]["error"]["code"] == "unavailable"
    assert refused["code"] == "unavailable"
    assert greeting["type"] == "error" and greeting["code"] == "unavailable"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4013
    assert completed["message"]["content"] == tokens_text(60)
    assert message.status == "complete" and message.content == tokens_text(60)


async def _assistant_after_restore_check(dialogue_id: int) -> None:
    """Nothing to read while the database is away (the test's own connection goes
    straight to PostgreSQL, not through the cut proxy): the reply is still
    `streaming` there, so nothing was saved truncated meanwhile."""
    message = await _assistant(dialogue_id)
    assert message is not None and message.status == "streaming"
    return None


async def test_socket_churn_while_replies_stream_leaks_no_tasks_or_memory(
    fault_cluster,
):
    # given a few replies streaming and each process's baseline
    cluster = fault_cluster.cluster
    user, cookie = await _user_and_cookie()
    dialogues = [await _dialogue(user) for _ in range(4)]
    senders = [await Client.open(cluster.ws_url, cookie) for _ in dialogues]
    for sender, dialogue_id in zip(senders, dialogues, strict=True):
        await sender.send_message(dialogue_id, "[[fake tokens=500 tps=50]] stream")
    before = [fault_cluster.detail(i)["process"] for i in range(len(cluster.backends))]

    # when 200 sockets connect through nginx, open a streaming dialogue, read a
    # little and disconnect, in waves of 50
    async def churn(i: int) -> None:
        client = await Client.open(cluster.ws_url, cookie)
        await client.send(
            {"type": "dialogue.open", "dialogue": dialogues[i % len(dialogues)]}
        )
        state = await client.until("dialogue.state")
        if i % 2 and state["messages"][-1]["status"] == "streaming":
            await client.until("reply.delta", "reply.completed")
        await client.close()

    for wave in range(4):
        await asyncio.gather(*(churn(wave * 50 + i) for i in range(50)))
    for sender in senders:
        await sender.until("reply.completed", timeout=30)
        await sender.close()
    await asyncio.sleep(2)  # daphne reaps closed connections every second

    # then every socket is gone and tasks and memory are back near their baselines
    after = [fault_cluster.detail(i)["process"] for i in range(len(cluster.backends))]
    for b, a in zip(before, after, strict=True):
        assert a["websockets"] == 0
        assert a["asyncio_tasks"] <= b["asyncio_tasks"] - b["websockets"] + 5, (b, a)
        assert a["rss_kb"] - b["rss_kb"] < 40 * 1024, (b, a)


async def test_sigterm_lets_the_reply_finish_and_moves_clients_with_4012(fault_cluster):
    # given a short reply streaming on backend 1
    cluster = fault_cluster.cluster
    user, cookie = await _user_and_cookie()
    dialogue_id = await _dialogue(user)
    client = await Client.open(fault_cluster.backend_ws(1), cookie)
    await client.send_message(dialogue_id, "[[fake tokens=80 tps=40]] finish please")
    await client.until("reply.delta")

    # when the process gets SIGTERM (grace 5 s in this cluster)
    started = time.monotonic()
    os.kill(cluster.backends[1].pid, signal.SIGTERM)
    try:
        # then the socket is closed with 4012 (restarting) at once, the reply
        # still completes,
        # and the process exits after it, within the grace period
        from websockets.exceptions import ConnectionClosed

        with pytest.raises(ConnectionClosed) as closed:
            await client.until("never", timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4012
        exited = await asyncio.to_thread(cluster.wait_backend_exit, 1, 15)
        message = await _wait_final(dialogue_id, timeout=10)

        assert exited and time.monotonic() - started < 12
        assert message.status == "complete"
        assert message.content == tokens_text(80)
    finally:
        cluster.restart_backend(1)


# Last in the file: a Redis restart is the one fault that can leave a process
# degraded for the tests after it.
async def test_redis_restart_mid_stream_ends_the_reply_and_later_messages_work(
    fault_cluster,
):
    # given a reply streaming through nginx
    user, cookie = await _user_and_cookie()
    dialogue_id = await _dialogue(user)
    client = await Client.open(fault_cluster.cluster.ws_url, cookie)
    await client.send_message(dialogue_id, "[[fake tokens=120 tps=40]] go")
    await client.until("reply.delta")

    # when Redis restarts (and forgets everything: --save '')
    await asyncio.to_thread(fault_cluster.redis.restart)

    # then the reply reaches a definite state, no process crashed, and a new message
    # through nginx is answered completely
    message = await _wait_final(dialogue_id, timeout=45)
    assert message.status in ("complete", "interrupted", "failed")
    assert tokens_text(120).startswith(message.content)
    await client.close()
    assert all(b.alive() for b in fault_cluster.cluster.backends)

    fresh = await Client.open(fault_cluster.cluster.ws_url, cookie)
    other = await _dialogue(user)
    await fresh.send_message(other, "[[fake tokens=20 tps=100]] again")
    completed = await fresh.until("reply.completed", timeout=30)
    await fresh.close()
    assert completed["message"]["content"] == tokens_text(20)
