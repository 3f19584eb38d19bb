"""Every reply ends on screen and in the database with all its text (issue 15,
item 7): huge outputs go out in frames below the limit, NUL and lone surrogates are
replaced before anything is published or saved, a damaged live state cannot make
`dialogue.open` fail, and a final state the database refused is saved later from the
live store. (The real outage, with two processes: tests/cluster/test_faults.py.)"""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from conversations.models import Message
from conversations.realtime import get_store
from conversations.services.streaming import MAX_DELTA_CHARS, clean_text, split_delta
from conversations.services.workers import finals_flush, get_worker, replies_reap
from tests.factories import DialogueFactory, MessageFactory

pytestmark = pytest.mark.django_db(transaction=True)
FRAME_LIMIT = 1 << 20


def send_frame(content="hello", *, dialogue=None, client_id="c-1"):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
    }


@database_sync_to_async
def fetch(message_id):
    return Message.objects.get(pk=message_id)


def test_clean_text_keeps_pairs_and_replaces_what_cannot_be_stored():
    assert clean_text("plain 文字 😀") == "plain 文字 😀"
    assert clean_text("a\x00b") == "a\ufffdb"
    assert clean_text("x\ud800y\udfffz") == "x\ufffdy\ufffdz"
    assert clean_text("\ud83d\ude00") == "😀"  # a pair given as two halves


def test_split_delta_keeps_every_character_in_order():
    text = "é😀" * MAX_DELTA_CHARS
    pieces = split_delta(text)

    assert "".join(pieces) == text
    assert all(len(json.dumps({"delta": p})) < FRAME_LIMIT for p in pieces)


async def test_a_huge_model_output_goes_out_below_the_frame_limit(
    user, fake_openai, socket_for
):
    text = "😀x" * 600_000  # 1.2 M characters in one model chunk
    fake_openai.configure(text=text, chunk_chars=len(text))
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.completed", timeout=60)
        raw = [json.dumps(f) for f in frames if f["type"] == "reply.delta"]
        deltas = [f for f in frames if f["type"] == "reply.delta"]
        await ws.send({"type": "dialogue.open", "dialogue": deltas[0]["dialogue"]})
        state = (await ws.until("dialogue.state"))[-1]

    assert len(deltas) > 1 and max(len(r) for r in raw) < FRAME_LIMIT
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert "".join(d["delta"] for d in deltas) == text
    assert frames[-1]["message"]["content"] == text
    assert (await fetch(deltas[0]["message_id"])).content == text
    assert state["messages"][-1]["content"] == text


async def test_nul_and_lone_surrogates_are_replaced_before_publish_and_save(
    user, fake_openai, socket_for
):
    fake_openai.configure(text="one\x00two \ud800three \udc00four", chunk_chars=4)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.completed", timeout=30)

    deltas = [f for f in frames if f["type"] == "reply.delta"]
    expected = "one\ufffdtwo \ufffdthree \ufffdfour"
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert "".join(d["delta"] for d in deltas) == expected
    final = frames[-1]["message"]
    assert final["status"] == "complete" and final["content"] == expected
    assert (await fetch(final["id"])).content == expected


async def test_a_damaged_live_state_cannot_make_dialogue_open_fail(user, socket_for):
    import redis.asyncio as aioredis

    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    reply = await database_sync_to_async(MessageFactory)(
        dialogue=dialogue,
        role="assistant",
        status="streaming",
        content="saved so far",
        worker=get_worker().id,
    )
    client = aioredis.from_url(settings.REDIS_URL)
    key = f"{settings.CHAT_LIVE_PREFIX}:s:{reply.pk}"
    await client.hset(key, mapping={"q": "not-a-number", "o": "x", "d": "0"})
    await client.set(f"{key}:t", b"\xff\xfe broken")
    try:
        async with socket_for(user) as ws:
            await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
            frame = await ws.recv()
    finally:
        await client.delete(key, f"{key}:t")
        await client.aclose()

    assert frame["type"] == "dialogue.state"
    assert frame["messages"][-1]["content"] == "saved so far"


async def test_a_parked_final_state_is_saved_and_announced_not_reaped(user, socket_for):
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    reply = await database_sync_to_async(MessageFactory)(
        dialogue=dialogue,
        role="assistant",
        status="streaming",
        content="a checkpoint",
        worker="a-process-that-died",
    )
    await database_sync_to_async(Message.objects.filter(pk=reply.pk).update)(
        updated_at=reply.created_at.replace(year=2000)
    )
    full = "a checkpoint and everything after it"
    fields = {"content": full, "seq": 9, "status": "complete", "completion_tokens": 7}
    store = get_store()
    await store.final_park(reply.pk, dialogue.pk, fields)
    try:
        # the reaper leaves a parked reply alone, however dead its process
        assert await replies_reap(worker=get_worker()) == 0
        assert (await fetch(reply.pk)).status == "streaming"
        async with socket_for(user) as ws:
            await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
            shown = (await ws.until("dialogue.state"))[-1]["messages"][-1]
            # The process's reaper loop (a pass when the socket starts the worker,
            # then every 3 s) saves it: before this tab opened the dialogue (its
            # state then shows the saved reply) or after (the tab is told).
            if shown["status"] == "streaming":
                completed = await ws.until("reply.completed", timeout=10)
                shown = completed[-1]["message"]
    finally:
        await store.final_done(reply.pk)

    stored = await fetch(reply.pk)
    assert stored.status == "complete" and stored.content == full and stored.seq == 9
    assert shown["status"] == "complete" and shown["content"] == full
    assert await store.finals() == {}
    assert await finals_flush() == 0
