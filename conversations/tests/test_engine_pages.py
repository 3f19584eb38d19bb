"""Long dialogues stay fast: the newest page only, older pages on demand, a fixed
number of queries whatever the length."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async

from conversations import selectors
from conversations.models import Message
from tests.factories import DialogueFactory


def fill(dialogue, count):
    Message.objects.bulk_create(
        Message(
            dialogue=dialogue,
            user=dialogue.owner,
            role=Message.Role.USER if i % 2 == 0 else Message.Role.ASSISTANT,
            content=f"message {i}",
        )
        for i in range(count)
    )


@pytest.mark.parametrize("count", [5, 5000])
def test_opening_a_dialogue_costs_the_same_queries_whatever_its_length(
    user, count, django_assert_num_queries
):
    dialogue = DialogueFactory(owner=user)
    fill(dialogue, count)
    # dialogue, page, its images, its attachments, its siblings
    with django_assert_num_queries(5):
        found = selectors.dialogue_get_for_user(dialogue_id=dialogue.pk, user=user)
        page, has_more = selectors.message_page(dialogue=found)
    assert len(page) == min(count, 50)
    assert has_more is (count > 50)
    assert [m.content for m in page][-1] == f"message {count - 1}"


@pytest.mark.django_db(transaction=True)
async def test_history_pages_walk_back_through_every_message_once(user, socket_for):
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    await database_sync_to_async(fill)(dialogue, 5000)
    seen = []
    async with socket_for(user) as ws:
        started = time.perf_counter()
        await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
        state = await ws.recv(timeout=30)
        opened_ms = (time.perf_counter() - started) * 1000
        page, has_more = state["messages"], state["has_more"]
        seen = [m["id"] for m in page]
        while has_more:
            await ws.send(
                {"type": "dialogue.history", "dialogue": dialogue.pk, "before": seen[0]}
            )
            history = await ws.recv(timeout=30)
            assert history["type"] == "dialogue.history"
            seen = [m["id"] for m in history["messages"]] + seen
            has_more = history["has_more"]
    assert len(seen) == 5000 and seen == sorted(seen)
    assert len(set(seen)) == 5000
    print(f"dialogue.open of a 5,000-message dialogue: {opened_ms:.1f} ms")
