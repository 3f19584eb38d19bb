"""The chat socket end to end in-process: real consumer, real gateway over HTTP to the
fake upstream, real channel layer and live store (Redis when REDIS_URL is set)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from conversations.models import Dialogue, Message
from imaging.services import image_prompt_from_text

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(content="hello", *, dialogue=None, client_id="c-1", **extra):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
        **extra,
    }


@database_sync_to_async
def fetch(message_id):
    return Message.objects.get(pk=message_id)


async def test_send_streams_ordered_deltas_and_stores_the_concatenated_text(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=40, tps=400)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.completed")

    kinds = [f["type"] for f in frames]
    assert kinds[:3] == ["dialogue.created", "message.created", "reply.started"]
    assert kinds[-1] == "reply.completed"
    deltas = [f for f in frames if f["type"] == "reply.delta"]
    assert [d["seq"] for d in deltas] == list(range(1, len(deltas) + 1))
    assert len(deltas) < 40, "deltas are coalesced, not one frame per token"
    text = "".join(d["delta"] for d in deltas)
    final = frames[-1]["message"]
    assert final["content"] == text
    assert final["status"] == "complete"
    assert final["seq"] == deltas[-1]["seq"]
    assert final["usage"]["completion_tokens"] == 40
    stored = await fetch(final["id"])
    assert stored.content == text and stored.status == "complete"
    assert stored.completion_tokens == 40


async def test_protocol_objects_carry_the_contract_fields(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=3)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.completed")
    dialogue = frames[0]["dialogue"]
    assert {
        "id",
        "title",
        "model",
        "system_prompt",
        "created_at",
        "updated_at",
    } <= dialogue.keys()
    message = frames[1]["message"]
    assert {
        "id",
        "dialogue",
        "role",
        "content",
        "status",
        "model",
        "created_at",
        "client_id",
        "seq",
        "images",
        "usage",
        "error",
    } <= message.keys()
    assert message["client_id"] == "c-1" and message["role"] == "user"
    assert message["created_at"].endswith(("Z", "+00:00"))


async def test_other_tabs_receive_the_user_message_and_the_reply(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=10)
    async with socket_for(user) as first:
        await first.send(send_frame())
        frames = await first.until("reply.started")
        dialogue_id = frames[0]["dialogue"]["id"]
        await first.until("reply.completed")
        async with socket_for(user) as second:
            await second.send({"type": "dialogue.open", "dialogue": dialogue_id})
            await second.until("dialogue.state")
            await first.send(send_frame("again", dialogue=dialogue_id, client_id="c-2"))
            seen = await second.until("reply.completed")
    kinds = [f["type"] for f in seen]
    assert kinds[0] == "message.created", (
        seen and seen[0]["message"]["content"] == "again"
    )
    assert "reply.started" in kinds


async def test_duplicate_client_id_stores_one_message_and_makes_one_upstream_request(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=5)
    async with socket_for(user) as ws:
        await ws.send(send_frame(client_id="same"))
        first = await ws.until("reply.completed")
        await ws.until(
            "dialogue.updated"
        )  # the automatic title after the first exchange
        await ws.send(send_frame(client_id="same"))
        again = await ws.until("message.created")
        assert await ws.nothing(0.5)
    assert [f["type"] for f in again] == ["dialogue.created", "message.created"]
    assert again[1]["message"]["id"] == first[1]["message"]["id"]
    assert again[0]["dialogue"]["id"] == first[0]["dialogue"]["id"]
    chat_requests = [
        r for r in fake_openai.requests if r["path"].endswith("/chat/completions")
    ]
    assert sum(1 for r in chat_requests if r["body"].get("stream")) == 1, (
        "one reply request"
    )
    assert (
        await database_sync_to_async(Message.objects.filter(client_id="same").count)()
        == 1
    )


async def test_dialogue_state_while_streaming_resumes_exactly(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=60, tps=100)
    async with socket_for(user) as first:
        await first.send(send_frame())
        frames = await first.until("reply.started")
        dialogue_id = frames[0]["dialogue"]["id"]
        await asyncio.sleep(0.25)
        async with socket_for(user) as second:
            await second.send({"type": "dialogue.open", "dialogue": dialogue_id})
            later = await second.until("reply.completed")
        full = await first.until("reply.completed")
    state = later[0]
    assert state["type"] == "dialogue.state"
    streaming = state["messages"][-1]
    assert streaming["status"] == "streaming" and streaming["seq"] > 0
    deltas = [f for f in later if f["type"] == "reply.delta"]
    assert deltas and deltas[0]["seq"] == streaming["seq"] + 1, "no gap, no duplicate"
    resumed = streaming["content"] + "".join(d["delta"] for d in deltas)
    assert resumed == full[-1]["message"]["content"] == later[-1]["message"]["content"]


async def test_reply_completes_and_is_stored_when_every_socket_closes(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=30, tps=100)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.started")
    reply_id = frames[-1]["message"]["id"]
    for _ in range(100):
        stored = await fetch(reply_id)
        if stored.status != "streaming":
            break
        await asyncio.sleep(0.1)
    assert stored.status == "complete"
    assert stored.completion_tokens == 30


async def test_stop_with_seq_saves_exactly_the_text_shown_and_closes_upstream(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=500, tps=50)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.started")
        dialogue_id = frames[0]["dialogue"]["id"]
        shown = []
        while len(shown) < 3:
            frame = await ws.recv()
            if frame["type"] == "reply.delta":
                shown.append(frame)
        await ws.send(
            {"type": "reply.stop", "dialogue": dialogue_id, "seq": shown[1]["seq"]}
        )
        stopped = (await ws.until("reply.stopped"))[-1]
    expected = "".join(d["delta"] for d in shown[:2])
    assert stopped["message"]["status"] == "stopped"
    assert stopped["message"]["content"] == expected
    assert stopped["message"]["seq"] == shown[1]["seq"]
    assert (await fetch(stopped["message"]["id"])).content == expected
    assert fake_openai.wait_for(lambda: fake_openai.closed_early, timeout=1.0)


async def test_stop_without_a_reply_in_flight_does_nothing(user, dialogue, socket_for):
    async with socket_for(user) as ws:
        await ws.send({"type": "reply.stop", "dialogue": dialogue.pk})
        await ws.send({"type": "ping"})
        assert (await ws.recv())["type"] == "pong"


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [
        ({"fault": "http_500"}, "upstream_error"),
        ({"fault": "http_429"}, "upstream_rate_limited"),
        ({"fault": "error_after:5"}, "upstream_error"),
        ({"fault": "drop_after:5"}, "upstream_disconnected"),
        ({"fault": "stall_after:5"}, "upstream_timeout"),
    ],
)
async def test_upstream_failures_fail_the_reply_keeping_the_text(
    user, fake_openai, socket_for, settings, behaviour, code
):
    settings.LLM_INACTIVITY_TIMEOUT = 1.0
    settings.LLM_MAX_RETRIES = 0
    fake_openai.configure(tokens=50, tps=200, **behaviour)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frames = await ws.until("reply.failed", timeout=15)
    failed = frames[-1]["message"]
    shown = "".join(f["delta"] for f in frames if f["type"] == "reply.delta")
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == code
    assert len(failed["error"]["message"]) > 20
    assert failed["content"] == shown
    if behaviour["fault"].endswith(":5"):
        assert shown, "the text received before the fault is kept"
    assert (await fetch(failed["id"])).content == shown


async def test_a_second_send_while_streaming_is_busy(user, fake_openai, socket_for):
    fake_openai.configure(tokens=100, tps=50)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        dialogue_id = (await ws.until("reply.started"))[0]["dialogue"]["id"]
        await ws.send(send_frame("more", dialogue=dialogue_id, client_id="c-2"))
        error = (await ws.until("error"))[-1]
        await ws.send({"type": "reply.stop", "dialogue": dialogue_id})
        await ws.until("reply.stopped")
    assert error["code"] == "busy" and error["ref"] == "c-2"


async def test_regenerate_answers_again_and_keeps_the_old_reply_as_replaced(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=5)
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        first = await ws.until("reply.completed")
        dialogue_id = first[0]["dialogue"]["id"]
        await ws.send({"type": "reply.regenerate", "dialogue": dialogue_id})
        second = await ws.until("reply.completed")
    old = await fetch(first[-1]["message"]["id"])
    assert old.replaced
    assert (
        second[-1]["message"]["id"] != old.pk
        and second[-1]["message"]["status"] == "complete"
    )


async def test_edit_replaces_the_last_turn(user, fake_openai, socket_for):
    fake_openai.configure(tokens=5)
    async with socket_for(user) as ws:
        await ws.send(send_frame("first wording"))
        first = await ws.until("reply.completed")
        dialogue_id = first[0]["dialogue"]["id"]
        await ws.send(
            {
                "type": "message.edit",
                "dialogue": dialogue_id,
                "content": "second wording",
                "client_id": "c-2",
            }
        )
        edited = await ws.until("reply.completed")
    created = next(f for f in edited if f["type"] == "message.created")
    summary = [
        (f["type"], (f.get("message") or {}).get("content")) for f in first + edited
    ]
    assert created["message"]["content"] == "second wording", summary
    assert (await fetch(first[1]["message"]["id"])).replaced
    # The reply request, not the concurrent automatic-title one.
    last_reply = [r for r in fake_openai.requests if r["body"].get("stream")][-1]
    assert last_reply["body"]["messages"][-1]["content"] == "second wording"


async def test_unknown_model_is_refused_before_the_model_is_called(
    user, fake_openai, socket_for
):
    async with socket_for(user) as ws:
        await ws.send(send_frame(model="not-offered"))
        error = await ws.recv()
    assert error["type"] == "error" and error["code"] == "bad_request"
    assert not fake_openai.requests


async def test_foreign_dialogue_is_not_found_exactly_like_a_missing_one(
    user, other_user, fake_openai, socket_for
):
    foreign = await database_sync_to_async(Dialogue.objects.create)(
        owner=other_user, title="secret"
    )
    answers = []
    async with socket_for(user) as ws:
        for dialogue_id in (foreign.pk, 10**9):
            for frame in (
                {"type": "dialogue.open", "dialogue": dialogue_id},
                {"type": "dialogue.history", "dialogue": dialogue_id, "before": 1},
                send_frame(dialogue=dialogue_id, client_id=f"x{dialogue_id}"),
                {"type": "reply.regenerate", "dialogue": dialogue_id},
                {"type": "reply.stop", "dialogue": dialogue_id},
            ):
                await ws.send(frame)
                reply = await ws.recv()
                reply.pop("ref", None)
                answers.append((dialogue_id, frame["type"], reply))
    by_frame = {}
    for _dialogue_id, kind, reply in answers:
        by_frame.setdefault(kind, []).append(reply)
        assert reply["code"] == "not_found"
    for replies in by_frame.values():
        assert replies[0] == replies[1]
    assert not fake_openai.requests


async def test_too_long_message_is_refused(user, fake_openai, socket_for, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 100
    async with socket_for(user) as ws:
        await ws.send(send_frame("x" * 101))
        error = await ws.recv()
    assert error["code"] == "too_long" and error["ref"] == "c-1"
    assert not fake_openai.requests


async def test_send_rate_is_limited_with_retry_after(
    user, fake_openai, socket_for, settings
):
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 2
    fake_openai.configure(tokens=2)
    async with socket_for(user) as ws:
        for i in range(2):
            await ws.send(send_frame(client_id=f"r{i}"))
            await ws.until("reply.completed")
        await ws.send(send_frame(client_id="r2"))
        # (a dialogue.updated with the automatic title may still be on its way)
        frames = await ws.until("error")
    error = frames[-1]
    assert error["code"] == "rate_limited" and 1 <= error["retry_after"] <= 60
    assert not [f for f in frames if f["type"] == "message.created"]
    assert len([r for r in fake_openai.requests if r["body"].get("stream")]) == 2


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '"string"',
        "{}",
        '{"type": 5}',
        '{"type": "nope"}',
        '{"type": "message.send", "dialogue": "1", "content": "x", "client_id": "a"}',
        '{"type": "message.send", "dialogue": null, "content": 5, "client_id": "a"}',
        '{"type": "message.send", "dialogue": null, "content": "x"}',
        '{"type": "dialogue.open"}',
        '{"type": "dialogue.open", "dialogue": true}',
        '{"type": "dialogue.history", "dialogue": 1, "before": "x"}',
        '{"type": "reply.stop", "dialogue": 1, "seq": -1}',
    ],
)
async def test_malformed_frames_get_bad_request_and_the_socket_keeps_serving(
    user, socket_for, text
):
    async with socket_for(user) as ws:
        await ws.send_text(text)
        error = await ws.recv()
        await ws.send({"type": "ping"})
        pong = await ws.recv()
    assert error["type"] == "error" and error["code"] in ("bad_request", "not_found")
    assert pong == {"type": "pong"}


async def test_a_frame_over_the_limit_closes_the_socket(user, socket_for, settings):
    settings.CHAT_MAX_FRAME_BYTES = 1000
    async with socket_for(user) as ws:
        await ws.send_text(json.dumps(send_frame("x" * 2000)))
        closed = await ws.c.receive_output(timeout=2)
    assert closed == {"type": "websocket.close", "code": 4009}


async def test_anonymous_socket_is_closed_with_4401(db):
    from conversations.tests.conftest import open_socket

    async with open_socket(None) as ws:
        closed = await ws.c.receive_output(timeout=2)
    assert closed["type"] == "websocket.close" and closed["code"] == 4401


async def test_offline_demo_model_streams_an_honest_reply(user, socket_for, settings):
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    settings.DEMO_TOKENS_PER_SECOND = 0
    async with socket_for(user) as ws:
        await ws.send(send_frame("Tell me about lighthouses"))
        frames = await ws.until("reply.completed")
    text = frames[-1]["message"]["content"]
    assert "offline demo" in text and "OPENAI_API_KEY" in text and "lighthouses" in text
    assert frames[-1]["message"]["model"] == "offline-demo"


async def test_dead_process_reply_is_marked_interrupted_on_open(
    user, dialogue, socket_for
):
    reply = await database_sync_to_async(Message.objects.create)(
        dialogue=dialogue,
        user=user,
        role="assistant",
        status="streaming",
        content="partial",
        worker="dead-worker",
    )
    # Idle for longer than a heartbeat lives: its process is gone.
    await database_sync_to_async(Message.objects.filter(pk=reply.pk).update)(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    async with socket_for(user) as ws:
        await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
        state = await ws.until("dialogue.state")
    message = state[-1]["messages"][-1]
    assert message["id"] == reply.pk and message["status"] == "interrupted"
    assert message["content"] == "partial" and message["error"]["code"] == "interrupted"


def test_every_event_survives_a_json_round_trip(user, dialogue):
    from conversations.serializers import dialogue_dict, message_dict

    message = Message.objects.create(
        dialogue=dialogue, user=user, role="user", content="hé", client_id="k"
    )
    events = [
        {"type": "dialogue.created", "dialogue": dialogue_dict(dialogue)},
        {"type": "message.created", "message": message_dict(message)},
        {
            "type": "reply.delta",
            "dialogue": dialogue.pk,
            "message_id": message.pk,
            "seq": 1,
            "delta": "x",
        },
    ]
    for event in events:
        assert json.loads(json.dumps(event)) == event
    assert image_prompt_from_text("/image a fox") == "a fox"
    assert image_prompt_from_text("image: a cat") == "a cat"
    assert image_prompt_from_text("imagine") is None


async def test_a_server_refusing_tools_is_asked_again_plainly(
    user, fake_openai, socket_for, monkeypatch
):
    from conversations import llm

    monkeypatch.setattr(
        llm, "_PLAIN_MODELS", set()
    )  # what is learnt stays in this test
    # given a model server that rejects `tools` and `stream_options` with HTTP 400
    fake_openai.configure(tokens=6)
    fake_openai.responder = lambda body: (
        {"fault": "http_400"} if "tools" in body or "stream_options" in body else None
    )
    async with socket_for(user) as ws:
        # when two messages are sent
        await ws.send(send_frame("first", client_id="p1"))
        first = (await ws.until("reply.completed"))[-1]["message"]
        await ws.send(send_frame("second", dialogue=first["dialogue"], client_id="p2"))
        second = (await ws.until("reply.completed"))[-1]["message"]
    # then both replies complete, usage is counted locally, and the refusal is learnt
    assert first["status"] == second["status"] == "complete"
    assert first["usage"]["completion_tokens"] > 0
    streamed = [r["body"] for r in fake_openai.requests if r["body"].get("stream")]
    assert ["tools" in b for b in streamed] == [True, False, False]
