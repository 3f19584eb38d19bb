"""The context builder inside the real engine: what the fake upstream receives when a
user continues a long dialogue on a model with a small window."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from conversations.catalog import resolve_model
from conversations.models import Dialogue
from conversations.services.context import SUMMARY_INSTRUCTIONS, SUMMARY_PREFIX
from conversations.tests.test_context import SYSTEM_PROMPT, add_turns
from conversations.tokens import count_messages
from tests.factories import DialogueFactory

pytestmark = pytest.mark.django_db(transaction=True)


def is_summary(body):
    return body["messages"][0]["content"].startswith(SUMMARY_INSTRUCTIONS[:40])


@database_sync_to_async
def long_dialogue(user):
    dialogue = DialogueFactory(
        owner=user, title="Long", system_prompt=SYSTEM_PROMPT, model="fake-small"
    )
    add_turns(dialogue, 200)
    return dialogue


async def test_continuing_a_200_turn_dialogue_sends_a_request_that_fits(
    user, fake_openai, socket_for
):
    # given a 200-turn dialogue on the 2,048-token model
    dialogue = await long_dialogue(user)
    spec = resolve_model("fake-small")
    fake_openai.set_responder(
        lambda body: (
            {"tokens": 5} if body.get("stream") else {"text": "EARLIER-TOPICS-SUMMARY"}
        )
    )

    async with socket_for(user) as ws:
        # when the user sends two more messages
        for n, text in enumerate(["What about topic 200?", "And topic 201?"]):
            await ws.send(
                {
                    "type": "message.send",
                    "dialogue": dialogue.pk,
                    "content": text,
                    "client_id": f"e-{n}",
                }
            )
            await ws.until("reply.completed", timeout=30)

    # then each reply request fits the window and holds the system prompt, the
    # summary and the newest turn; the summary was asked for once
    replies = [b for b in fake_openai.chat_requests if b.get("stream")]
    summaries = [
        b for b in fake_openai.chat_requests if not b.get("stream") and is_summary(b)
    ]
    assert len(replies) == 2 and len(summaries) == 1
    for body, question in zip(
        replies, ["What about topic 200?", "And topic 201?"], strict=True
    ):
        sent = body["messages"]
        assert body["model"] == "fake-small"
        assert (
            count_messages(sent, model="fake-small") + spec.output_reserve
            <= spec.context_tokens
        )
        assert sent[0] == {
            "role": "system",
            "content": SYSTEM_PROMPT
            + "\n\n"
            + SUMMARY_PREFIX
            + "EARLIER-TOPICS-SUMMARY",
        }
        assert [m["role"] for m in sent[1:]] == ["user", "assistant"] * (
            (len(sent) - 2) // 2
        ) + ["user"]
        assert sent[-1] == {"role": "user", "content": question}
        assert any(m["content"].startswith("Answer 199:") for m in sent)
    stored = await Dialogue.objects.aget(pk=dialogue.pk)
    assert stored.summary == "EARLIER-TOPICS-SUMMARY" and stored.summary_upto_id
