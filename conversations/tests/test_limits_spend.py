"""Spend is bounded and counted (issue 14, item 4): quotas hold under concurrency,
images count, a reply's `max_tokens` fits the quota left, tool calls, reply length,
duration and silence are capped."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from channels.db import database_sync_to_async

from conversations.asyncdb import db_async
from conversations.llm import LLMChunk
from conversations.models import Message, UsageDaily
from conversations.services.streaming import ReplyControl, reply_stream
from tests.factories import DialogueFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def send(content="hello", client_id="c-1", dialogue=None):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
    }


@database_sync_to_async
def today_usage(user):
    row = UsageDaily.objects.filter(user=user).first()
    return row


@database_sync_to_async
def replies_of(user):
    return list(
        Message.objects.filter(user=user, role=Message.Role.ASSISTANT).order_by("id")
    )


async def _first_answer(ws):
    """The first frame that settles a send: a stored reply's end, or an error."""
    while True:
        frame = await ws.recv(timeout=30)
        if frame["type"] in ("error", "reply.completed", "reply.failed"):
            return frame


async def test_a_message_quota_holds_against_concurrent_sends(
    user, fake_openai, socket_for, settings
):
    settings.QUOTA_DAILY_MESSAGES = 3
    fake_openai.configure(tokens=3, tps=30)

    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(socket_for(user)) for _ in range(5)]

        async def one(i, ws):
            await ws.send(send(client_id=f"q{i}"))
            return await _first_answer(ws)

        # Five sockets send at once: each consumer takes its frame concurrently.
        answers = await asyncio.gather(*(one(i, ws) for i, ws in enumerate(sockets)))
    kinds = sorted(a["type"] if a["type"] != "error" else a["code"] for a in answers)
    assert kinds == ["quota_exceeded"] * 2 + ["reply.completed"] * 3
    assert len(await replies_of(user)) == 3
    assert (await today_usage(user)).messages == 3


async def test_a_reply_writes_no_more_than_the_token_quota_leaves(
    user, fake_openai, socket_for, settings
):
    settings.QUOTA_DAILY_TOKENS = 1000
    fake_openai.configure(tokens=5000)
    async with socket_for(user) as ws:
        await ws.send(send())
        frames = await ws.until("reply.completed", timeout=60)
    usage = await today_usage(user)
    assert usage.prompt_tokens + usage.completion_tokens <= 1000
    final = frames[-1]["message"]
    assert final["usage"]["completion_tokens"] <= 1000
    asked = [r["body"] for r in fake_openai.requests if r["body"].get("stream")][-1]
    max_tokens = asked.get("max_completion_tokens") or asked.get("max_tokens")
    assert 0 < max_tokens <= 1000 - usage.prompt_tokens
    # Spent: the next send is refused, before it is stored or once its prompt is
    # counted, and the model is not asked.
    asked_before = len(fake_openai.requests)
    async with socket_for(user) as ws:
        await ws.send(send(client_id="c-2", dialogue=frames[0]["dialogue"]["id"]))
        refused = await _first_answer(ws)
    code = refused.get("code") or refused["message"]["error"]["code"]
    assert code == "quota_exceeded"
    assert len(fake_openai.requests) == asked_before
    usage = await today_usage(user)
    assert usage.prompt_tokens + usage.completion_tokens <= 1000


async def test_every_reply_is_cut_at_chat_max_reply_tokens(
    user, fake_openai, socket_for, settings
):
    settings.CHAT_MAX_REPLY_TOKENS = 20
    fake_openai.configure(tokens=500)
    async with socket_for(user) as ws:
        await ws.send(send())
        frames = await ws.until("reply.completed", timeout=60)
    final = frames[-1]["message"]
    assert final["usage"]["completion_tokens"] <= 20
    assert len(final["content"].split()) <= 20


async def _image_answer(ws):
    while True:
        frame = await ws.recv(timeout=45)
        if frame["type"] in ("error", "image.completed", "image.failed"):
            return frame


async def test_pictures_count_toward_a_daily_image_quota(
    user, fake_openai, socket_for, storage, settings
):
    settings.QUOTA_DAILY_IMAGES = 2
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "image.generate",
                "dialogue": None,
                "prompt": "a",
                "client_id": "i1",
            }
        )
        assert (await _image_answer(ws))["type"] == "image.completed"
        await ws.send(send("/image a red fox", client_id="i2"))
        assert (await _image_answer(ws))["type"] == "image.completed"
        await ws.send(
            {
                "type": "image.generate",
                "dialogue": None,
                "prompt": "b",
                "client_id": "i3",
            }
        )
        refused = await _image_answer(ws)
    assert refused["type"] == "error" and refused["code"] == "quota_exceeded"
    assert (await today_usage(user)).images == 2


async def test_a_picture_the_model_asks_for_counts_and_is_refused_past_the_quota(
    user, fake_openai, socket_for, storage, settings
):
    settings.QUOTA_DAILY_IMAGES = 1
    fake_openai.configure(
        tool_call={"name": "generate_image", "arguments": {"prompt": "a whale"}},
        tokens=4,
    )
    async with socket_for(user) as ws:
        await ws.send(send("draw a whale"))
        first = await ws.until("reply.completed", timeout=45)
        assert len(first[-1]["message"]["images"]) == 1
        await ws.send(
            send("another", client_id="c-2", dialogue=first[0]["dialogue"]["id"])
        )
        second = await ws.until("reply.completed", timeout=45)
    assert second[-1]["message"]["images"] == []
    tool_answer = [r["body"] for r in fake_openai.requests if r["body"].get("stream")]
    assert "image" in tool_answer[-1]["messages"][-1]["content"].lower()
    assert (await today_usage(user)).images == 1


async def _streaming_reply():
    user = await db_async(UserFactory)()
    dialogue = await db_async(DialogueFactory)(owner=user)
    return await Message.objects.acreate(
        dialogue=dialogue,
        user=user,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model="fake-model",
    )


async def test_tool_calls_past_the_cap_are_answered_as_refused(settings):
    settings.CHAT_MAX_TOOL_CALLS = 3
    calls = [{"id": f"call{i}", "name": "draw", "arguments": "{}"} for i in range(40)]
    requests: list[list[dict]] = []

    class ToolHappyLLM:
        async def stream(self, *, messages, **kwargs):
            requests.append(messages)
            if len(requests) == 1:
                yield LLMChunk(tool_calls=calls, finish_reason="tool_calls")
            else:
                yield LLMChunk(text="done")

    ran: list[str] = []

    async def handler(call):
        ran.append(call["id"])
        yield "drawn"

    reply = await _streaming_reply()
    events = [
        e
        async for e in reply_stream(
            message=reply,
            llm=ToolHappyLLM(),
            messages=[],
            control=ReplyControl(),
            tools=[{"type": "function"}],
            tool_handler=handler,
        )
    ]
    assert ran == ["call0", "call1", "call2"]
    answers = [m for m in requests[1] if m.get("role") == "tool"]
    assert len(answers) == 40
    assert [a["content"] for a in answers[:3]] == ["drawn"] * 3
    assert all(a["content"].startswith("Refused") for a in answers[3:])
    assert events[-1]["type"] == "reply.completed"


async def test_a_reply_ends_after_chat_max_reply_seconds(settings):
    settings.CHAT_MAX_REPLY_SECONDS = 0.5

    class EndlessLLM:
        async def stream(self, **kwargs):
            for i in range(10_000):
                await asyncio.sleep(0.02)
                yield LLMChunk(text=f"t{i} ")

    reply = await _streaming_reply()
    events = [
        e
        async for e in reply_stream(
            message=reply, llm=EndlessLLM(), messages=[], control=ReplyControl()
        )
    ]
    final = events[-1]
    assert final["type"] == "reply.failed"
    assert final["message"]["error"]["code"] == "reply_timeout"
    assert final["message"]["content"].startswith("t0 t1")
    assert len(final["message"]["content"].split()) < 100


async def test_bytes_without_content_do_not_keep_a_reply_alive(
    user, fake_openai, socket_for, settings
):
    # `: ping` comments every 50 ms for 30 s after 2 tokens: no content.
    settings.LLM_INACTIVITY_TIMEOUT = 1.0
    fake_openai.configure(tokens=10, fault="ping_after:2", stall_seconds=30)
    async with socket_for(user) as ws:
        await ws.send(send())
        frames = await ws.until("reply.failed", timeout=20)
    final = frames[-1]["message"]
    assert final["error"]["code"] == "upstream_timeout"
    assert final["content"], "the text so far is kept"
