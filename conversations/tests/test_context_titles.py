"""Automatic titles: proposed by the model after the first exchange, never over a
title the user set."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from conversations.catalog import resolve_model
from conversations.exceptions import LLMError
from conversations.llm import DemoChatLLM, get_llm
from conversations.models import Dialogue, Message
from conversations.services.dialogues import title_autoname, title_from_text
from tests.factories import DialogueFactory, MessageFactory

pytestmark = pytest.mark.django_db(transaction=True)


@database_sync_to_async
def first_exchange(
    user, text="How do I keep a sourdough starter alive over a holiday?", **fields
):
    dialogue = DialogueFactory(owner=user, title="", **fields)
    MessageFactory(dialogue=dialogue, content=text)
    MessageFactory(
        dialogue=dialogue, role=Message.Role.ASSISTANT, content="Feed it and chill it."
    )
    return dialogue


class FailingLLM:
    calls = 0

    async def complete(self, **kwargs):
        self.calls += 1
        raise LLMError("down", code="unavailable")


async def test_model_proposes_a_short_clean_title(user, fake_openai):
    # given an untitled dialogue after its first exchange
    fake_openai.configure(
        text='Title: "Keeping Sourdough Alive On Holiday Trips Abroad."'
    )
    dialogue = await first_exchange(user)

    # when it is named through the real gateway
    updated = await title_autoname(
        dialogue=dialogue, llm=get_llm(), model=resolve_model("fake-small")
    )

    # then a title of at most six words, without quotes or prefix, is saved
    assert (
        updated is not None
        and updated.title == "Keeping Sourdough Alive On Holiday Trips"
    )
    stored = await Dialogue.objects.aget(pk=dialogue.pk)
    assert stored.title == updated.title and stored.title_set_by_user is False
    request = fake_openai.chat_requests[-1]
    assert request["model"] == "fake-small" and not request.get("stream")
    assert request["messages"][-1]["content"].startswith("How do I keep a sourdough")


async def test_a_title_the_user_set_is_never_overwritten(user):
    dialogue = await first_exchange(user)
    await Dialogue.objects.filter(pk=dialogue.pk).aupdate(
        title="Mine", title_set_by_user=True
    )
    fresh = await Dialogue.objects.aget(pk=dialogue.pk)
    llm = FailingLLM()

    assert await title_autoname(dialogue=fresh, llm=llm, model="fake-small") is None
    assert llm.calls == 0


async def test_a_rename_racing_the_model_wins(user, fake_openai):
    # given a stale in-memory dialogue (untitled) that the user renames meanwhile
    fake_openai.configure(text="Automatic title")
    dialogue = await first_exchange(user)
    await Dialogue.objects.filter(pk=dialogue.pk).aupdate(
        title="Typed by me", title_set_by_user=True
    )

    # when naming completes with the stale object
    result = await title_autoname(dialogue=dialogue, llm=get_llm(), model="fake-small")

    # then nothing is saved over the user's title
    assert result is None
    stored = await Dialogue.objects.aget(pk=dialogue.pk)
    assert stored.title == "Typed by me"


async def test_a_failing_model_falls_back_to_the_first_message(user):
    dialogue = await first_exchange(
        user, text="## Plan a *birthday* party for my grandmother's ninetieth"
    )

    updated = await title_autoname(
        dialogue=dialogue, llm=FailingLLM(), model="fake-small"
    )

    assert updated.title == "Plan a birthday party for my"


async def test_the_offline_demo_derives_a_title(user):
    dialogue = await first_exchange(
        user, text="Explain the Monty Hall problem simply, please"
    )

    updated = await title_autoname(
        dialogue=dialogue, llm=DemoChatLLM(0), model="offline-demo"
    )

    assert updated.title == "Explain the Monty Hall problem simply"


async def test_other_tabs_receive_the_automatic_title(user, fake_openai, socket_for):
    # given a socket sending the first message of a new dialogue
    fake_openai.configure(tokens=5)
    fake_openai.set_responder(
        lambda body: None if body.get("stream") else {"text": "Greeting the assistant"}
    )
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "message.send",
                "dialogue": None,
                "content": "hello there",
                "client_id": "t-1",
            }
        )
        await ws.until("reply.completed", timeout=30)
        # then a dialogue.updated with the proposed title follows the reply
        frames = await ws.until("dialogue.updated", timeout=30)
    assert frames[-1]["dialogue"]["title"] == "Greeting the assistant"
    assert frames[-1]["dialogue"]["title_set_by_user"] is False


def test_title_cleaning():
    assert title_from_text('"Hello World"') == "Hello World"
    assert title_from_text("**Bold** title\nsecond line") == "Bold title"
    assert title_from_text("```python\nprint(1)\n```\nAfter code") == "After code"
    assert (
        title_from_text("one two three four five six seven")
        == "one two three four five six"
    )
    assert title_from_text("") == ""


def test_titles_keep_punctuation_and_the_slash():
    assert title_from_text("Hello there! What can you do?") == (
        "Hello there! What can you do?"
    )
    assert title_from_text("/image a red bicycle") == "/image a red bicycle"
    assert title_from_text("Fix snake_case in C# code.") == "Fix snake_case in C# code"
    assert title_from_text("> [Docs](http://x) for C++?") == "Docs for C++?"


async def test_the_offline_demo_titles_keep_what_was_typed(user):
    dialogue = await first_exchange(user, text="Hello there! What can you do?")

    updated = await title_autoname(
        dialogue=dialogue, llm=DemoChatLLM(0), model="offline-demo"
    )

    assert updated.title == "Hello there! What can you do?"
