"""Quotas through the real chat socket: refused before any model call."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async

from conversations.models import Message, UsageDaily, UserQuota

pytestmark = pytest.mark.django_db(transaction=True)


def send_frame(content="hello", *, dialogue=None, client_id="q-1"):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
    }


@database_sync_to_async
def use_up(user, *, messages=0, tokens=0):
    UsageDaily.objects.create(
        user=user, day=datetime.now(UTC).date(), messages=messages, prompt_tokens=tokens
    )


async def test_a_user_over_the_token_quota_gets_quota_exceeded_and_no_model_call(
    user, fake_openai, socket_for, settings
):
    # given a daily quota of 1,000 tokens, all used today
    settings.QUOTA_DAILY_TOKENS = 1000
    await use_up(user, tokens=1000)

    # when the user sends a message
    async with socket_for(user) as ws:
        await ws.send(send_frame())
        frame = await ws.recv()

    # then the send is refused with the reset time, and the upstream saw nothing
    assert frame["type"] == "error" and frame["code"] == "quota_exceeded"
    assert frame["reset_at"].endswith("T00:00:00+00:00")
    assert fake_openai.chat_requests == []
    assert not await Message.objects.filter(user=user).aexists()


async def test_a_per_user_message_quota_refuses_after_the_allowed_replies(
    user, fake_openai, socket_for
):
    # given a user allowed one reply a day
    await UserQuota.objects.acreate(user=user, daily_messages=1)
    fake_openai.configure(tokens=5)

    async with socket_for(user) as ws:
        # when the first message is answered and a second one is sent
        await ws.send(send_frame(client_id="q-1"))
        done = await ws.until("reply.completed")
        dialogue_id = done[0]["dialogue"]["id"]
        await ws.send(send_frame("again", dialogue=dialogue_id, client_id="q-2"))
        refused = await ws.until("error")

    # then the reply was counted, and the second send refused without a model call
    assert refused[-1]["code"] == "quota_exceeded"
    row = await UsageDaily.objects.aget(user=user)
    assert row.messages == 1 and row.completion_tokens == 5
    assert sum(1 for body in fake_openai.chat_requests if body.get("stream")) == 1
