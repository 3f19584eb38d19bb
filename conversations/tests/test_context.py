"""The context builder: what a model with a small window is sent, and how often the
rolling summary is computed."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.db import database_sync_to_async

from conversations.catalog import resolve_model
from conversations.exceptions import LLMError
from conversations.llm import get_llm
from conversations.models import Dialogue, Message
from conversations.services import context as context_module
from conversations.services.context import (
    SUMMARY_INSTRUCTIONS,
    SUMMARY_PREFIX,
    context_build,
    context_report_for_dialogue,
)
from conversations.tokens import count_messages, count_tokens, warm_up
from tests.factories import DialogueFactory, UserFactory

SYSTEM_PROMPT = "You are the SYSPROMPT-7 assistant. Answer briefly."
SUMMARY_TEXT = "SUMMARY-CHECKPOINT: the user asked about many numbered topics."
SUMMARY_MARK = SUMMARY_INSTRUCTIONS[:40]


def add_turns(dialogue: Dialogue, count: int, *, start: int = 0) -> list[Message]:
    """`count` complete user/assistant turns, numbered from `start`."""
    rows = []
    for i in range(start, start + count):
        rows.append(
            Message(
                dialogue=dialogue,
                user=dialogue.owner,
                role=Message.Role.USER,
                content=f"Question {i}: tell me about topic {i} and why it matters.",
            )
        )
        rows.append(
            Message(
                dialogue=dialogue,
                user=dialogue.owner,
                role=Message.Role.ASSISTANT,
                content=f"Answer {i}: topic {i} matters because of reasons {i}a and {i}b.",
                model="fake-small",
            )
        )
    return Message.objects.bulk_create(rows)


def make_dialogue(turns: int, *, system_prompt: str = SYSTEM_PROMPT) -> Dialogue:
    dialogue = DialogueFactory(
        owner=UserFactory(), system_prompt=system_prompt, model="fake-small"
    )
    add_turns(dialogue, turns)
    return dialogue


def summary_requests(fake) -> list[dict]:
    return [
        body
        for body in fake.chat_requests
        if body["messages"] and body["messages"][0]["content"].startswith(SUMMARY_MARK)
    ]


class ScriptedLLM:
    """A tiny in-test gateway: counts summary calls, or fails them."""

    def __init__(
        self, text: str = SUMMARY_TEXT, error: Exception | None = None
    ) -> None:
        self.text, self.error, self.calls = text, error, []

    async def complete(self, *, model, messages, max_tokens=None):
        self.calls.append(messages)
        if self.error:
            raise self.error
        return self.text


@pytest.mark.django_db(transaction=True)
async def test_200_turn_dialogue_sends_a_request_that_fits_the_small_window(
    fake_openai,
):
    # given a 200-turn dialogue on a model with a 2,048-token window
    fake_openai.configure(text=SUMMARY_TEXT)
    dialogue = await database_sync_to_async(make_dialogue)(200)
    spec = resolve_model("fake-small")
    assert spec.context_tokens == 2048
    llm = get_llm()
    last = await Message.objects.filter(dialogue=dialogue).order_by("-id").afirst()

    # when the context is built through the real gateway and the reply is requested
    result = await context_build(
        dialogue=dialogue, model=spec, llm=llm, upto_message_id=last.pk
    )
    fake_openai.configure(text="the reply")
    async for _ in llm.stream(model=spec.name, messages=result.messages):
        pass

    # then the upstream got one summary request and a reply request that fits
    assert len(summary_requests(fake_openai)) == 1
    sent = fake_openai.chat_requests[-1]["messages"]
    assert count_messages(sent, model=spec.name) <= spec.input_budget
    assert (
        count_messages(sent, model=spec.name) + spec.output_reserve
        <= spec.context_tokens
    )
    # one system message: the prompt and the summary merged
    assert sent[0] == {
        "role": "system",
        "content": SYSTEM_PROMPT + "\n\n" + SUMMARY_PREFIX + SUMMARY_TEXT,
    }
    assert sent[1]["role"] == "user"
    assert (
        sent[-1]["content"]
        == "Answer 199: topic 199 matters because of reasons 199a and 199b."
    )
    assert sent[-2]["content"].startswith("Question 199:")
    assert [m["role"] for m in sent[1:]][-4:] == [
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    report = result.report
    assert report["summary_used"] and report["summary_refreshed"]
    assert report["total_messages"] == 400
    assert report["included_messages"] == len(sent) - 1
    assert report["omitted_messages"] == 400 - report["included_messages"]
    # counted with a margin until the server reports usage: never below the truth
    assert count_messages(sent, model=spec.name) <= report["used_tokens"]
    # and the summary request itself fits the window and covers the turns just dropped
    summary_request = summary_requests(fake_openai)[0]
    assert (
        count_messages(summary_request["messages"], model=spec.name)
        <= spec.input_budget
    )
    first_kept = sent[1]["content"].split(":")[0].split()[-1]
    assert f"Answer {int(first_kept) - 1}:" in summary_request["messages"][1]["content"]


@pytest.mark.django_db(transaction=True)
async def test_summary_is_computed_once_per_checkpoint_not_per_message(fake_openai):
    # given a long dialogue whose context has been built once (one summary)
    fake_openai.configure(text=SUMMARY_TEXT)
    dialogue = await database_sync_to_async(make_dialogue)(200)
    spec = resolve_model("fake-small")
    llm = get_llm()
    await context_build(dialogue=dialogue, model=spec, llm=llm)
    assert len(summary_requests(fake_openai)) == 1
    stored = await Dialogue.objects.aget(pk=dialogue.pk)
    assert stored.summary == SUMMARY_TEXT and stored.summary_upto_id is not None

    # when it is built again, and again after one more turn (a fresh object from the db)
    again = await context_build(dialogue=stored, model=spec, llm=llm)
    await database_sync_to_async(add_turns)(stored, 1, start=200)
    fresh = await Dialogue.objects.aget(pk=dialogue.pk)
    after_turn = await context_build(dialogue=fresh, model=spec, llm=llm)

    # then the stored checkpoint is reused: no new summary request
    assert len(summary_requests(fake_openai)) == 1
    assert again.report["summary_used"] and not again.report["summary_refreshed"]
    assert after_turn.messages[0]["content"].endswith(SUMMARY_PREFIX + SUMMARY_TEXT)
    assert after_turn.messages[-1]["content"].startswith("Answer 200:")

    # and once a quarter of the window has fallen out, it is refreshed exactly once,
    # folding the earlier summary into the new one
    fake_openai.configure(text="SECOND-SUMMARY")
    builds = 0
    for turn in range(201, 260):
        await database_sync_to_async(add_turns)(fresh, 1, start=turn)
        fresh = await Dialogue.objects.aget(pk=dialogue.pk)
        result = await context_build(dialogue=fresh, model=spec, llm=llm)
        builds += 1
        assert result.report["used_tokens"] <= spec.input_budget
        if len(summary_requests(fake_openai)) == 2:
            break
    assert len(summary_requests(fake_openai)) == 2
    assert builds > 5  # not one summary per message
    assert SUMMARY_TEXT in summary_requests(fake_openai)[1]["messages"][1]["content"]
    fresh = await Dialogue.objects.aget(pk=dialogue.pk)
    assert fresh.summary == "SECOND-SUMMARY"


@pytest.mark.django_db(transaction=True)
async def test_failed_summary_drops_old_turns_and_says_so():
    # given a long dialogue and a model that cannot summarise
    dialogue = await database_sync_to_async(make_dialogue)(200)
    spec = _small_spec()
    llm = ScriptedLLM(error=LLMError("down", code="unavailable"))

    # when the context is built
    result = await context_build(dialogue=dialogue, model=spec, llm=llm)

    # then the reply still gets the newest turns within budget, without a summary
    assert len(llm.calls) == 1
    assert result.report["summary_failed"] and not result.report["summary_used"]
    assert count_messages(result.messages, model=spec.name) <= spec.input_budget
    assert result.messages[0]["content"] == SYSTEM_PROMPT
    assert result.messages[-1]["content"].startswith("Answer 199:")
    stored = await Dialogue.objects.aget(pk=dialogue.pk)
    assert stored.summary == "" and stored.summary_upto_id is None


def _small_spec():
    from conversations.catalog import ModelSpec

    return ModelSpec("small-local", 1024, 256)


@pytest.mark.django_db(transaction=True)
async def test_a_giant_message_is_truncated_with_a_marker_never_sent_whole():
    # given a dialogue whose latest user message is far larger than the window
    def build():
        dialogue = make_dialogue(3)
        giant = (
            "HEAD-OF-PASTE " + "lorem ipsum dolor sit amet " * 3000 + " TAIL-OF-PASTE"
        )
        Message.objects.create(
            dialogue=dialogue,
            user=dialogue.owner,
            role=Message.Role.USER,
            content=giant,
        )
        return dialogue, giant

    dialogue, giant = await database_sync_to_async(build)()
    spec = _small_spec()

    # when the context is built
    result = await context_build(dialogue=dialogue, model=spec, llm=ScriptedLLM())

    # then the message is cut in the middle with a marker and everything fits
    last = result.messages[-1]["content"]
    assert last.startswith("HEAD-OF-PASTE") and last.endswith("TAIL-OF-PASTE")
    assert "[… truncated " in last and " tokens …]" in last
    assert (
        count_tokens(last, model=spec.name) < count_tokens(giant, model=spec.name) // 10
    )
    assert count_messages(result.messages, model=spec.name) <= spec.input_budget
    assert result.report["truncated"] is True
    assert result.messages[0]["content"] == SYSTEM_PROMPT


@pytest.mark.django_db(transaction=True)
async def test_short_dialogue_is_sent_whole_without_a_model_call():
    dialogue = await database_sync_to_async(make_dialogue)(3)
    llm = ScriptedLLM()

    result = await context_build(dialogue=dialogue, model=_small_spec(), llm=llm)

    assert llm.calls == []
    assert len(result.messages) == 1 + 6
    assert (
        result.report["included_messages"] == 6
        and result.report["omitted_messages"] == 0
    )
    assert (
        result.report["summary_used"] is False and result.report["truncated"] is False
    )


@pytest.mark.django_db(transaction=True)
async def test_replaced_failed_and_in_progress_messages_are_left_out():
    # given a turn that was edited (old pair replaced), a failed empty reply and the
    # reply now streaming
    def build():
        dialogue = make_dialogue(1, system_prompt="")
        owner = dialogue.owner
        make = Message.objects.create
        make(
            dialogue=dialogue,
            user=owner,
            role="user",
            content="old question",
            replaced=True,
        )
        make(
            dialogue=dialogue,
            user=owner,
            role="assistant",
            content="old answer",
            replaced=True,
        )
        make(dialogue=dialogue, user=owner, role="user", content="first try")
        make(
            dialogue=dialogue, user=owner, role="assistant", content="", status="failed"
        )
        make(
            dialogue=dialogue,
            user=owner,
            role="assistant",
            content="cut",
            status="stopped",
        )
        make(dialogue=dialogue, user=owner, role="user", content="new question")
        reply = make(
            dialogue=dialogue,
            user=owner,
            role="assistant",
            content="so f",
            status="streaming",
        )
        make(dialogue=dialogue, user=owner, role="user", content="after the reply")
        return dialogue, reply

    dialogue, reply = await database_sync_to_async(build)()

    result = await context_build(
        dialogue=dialogue,
        model=_small_spec(),
        llm=ScriptedLLM(),
        upto_message_id=reply.pk,
    )

    contents = [m["content"] for m in result.messages]
    assert contents[-4:] == [
        "Answer 0: topic 0 matters because of reasons 0a and 0b.",
        "first try",
        "cut",
        "new question",
    ]
    assert "old question" not in contents and "so f" not in contents
    assert "after the reply" not in contents
    assert result.messages[0]["role"] == "user"  # no system prompt, no summary


@pytest.mark.django_db
def test_context_build_on_5000_messages_reads_a_bounded_number_of_queries(
    django_assert_max_num_queries, monkeypatch
):
    # given a dialogue of 5,000 messages (2,500 turns)
    dialogue = make_dialogue(2500)
    spec = _small_spec()
    llm = ScriptedLLM()
    # Run the build's database work on this thread, inside the test transaction.
    monkeypatch.setattr(context_module, "db_async", sync_to_async)
    build = async_to_sync(context_build)
    warm_up()  # the tokenizer tables load once per process (~1 s), not per build

    # when the context is built (with its one summary) and rebuilt
    start = time.perf_counter()
    with django_assert_max_num_queries(6):
        first = build(dialogue=dialogue, model=spec, llm=llm)
    first_ms = (time.perf_counter() - start) * 1000
    start = time.perf_counter()
    with django_assert_max_num_queries(4):
        second = build(dialogue=dialogue, model=spec, llm=llm)
    second_ms = (time.perf_counter() - start) * 1000
    with django_assert_max_num_queries(4):
        report = context_report_for_dialogue(dialogue=dialogue, model=spec)
    print(
        f"context_build on 5,000 messages: {first_ms:.1f} ms with summary, {second_ms:.1f} ms after"
    )

    # then a few queries, whatever the length, and sane reports
    assert len(llm.calls) == 1
    assert first.report["total_messages"] == 5000
    assert second.report["summary_used"] and report["summary_used"]
    assert report["included_messages"] == second.report["included_messages"]
    assert first_ms < 1000 and second_ms < 500


@pytest.mark.django_db
def test_the_report_for_the_http_view_uses_the_stored_summary_without_a_model_call():
    dialogue = make_dialogue(200)
    Dialogue.objects.filter(pk=dialogue.pk).update(
        summary="stored",
        summary_upto_id=Message.objects.filter(dialogue=dialogue)
        .order_by("id")[300]
        .pk,
    )
    dialogue.refresh_from_db()

    report = context_report_for_dialogue(dialogue=dialogue, model=_small_spec())

    assert report["summary_used"] is True
    assert report["budget_tokens"] == _small_spec().input_budget
    assert 0 < report["used_tokens"] <= report["budget_tokens"]
    assert report["total_messages"] == 400
    assert report["included_messages"] + report["omitted_messages"] == 400
    assert set(report) >= {
        "budget_tokens",
        "used_tokens",
        "system_tokens",
        "summary_used",
        "summary_tokens",
        "included_messages",
        "total_messages",
        "omitted_messages",
        "truncated",
    }


def _strictly_alternating(messages: list[dict]) -> bool:
    """What strict chat templates (Gemma, Mistral, Llama 2) accept."""
    roles = [m["role"] for m in messages]
    if roles and roles[0] == "system":
        roles = roles[1:]
    return (
        bool(roles)
        and "system" not in roles
        and roles[-1] == "user"
        and all(
            role == ("user" if i % 2 == 0 else "assistant")
            for i, role in enumerate(roles)
        )
    )


@pytest.mark.django_db(transaction=True)
async def test_failed_stopped_empty_and_empty_replies_never_leave_two_user_turns():
    # given a dialogue with a system prompt, a stored summary, and replies that failed
    # with text, were stopped before any text, and came back empty
    def build():
        dialogue = make_dialogue(3)
        checkpoint = dialogue.messages.order_by("id")[1]
        Dialogue.objects.filter(pk=dialogue.pk).update(
            summary=SUMMARY_TEXT, summary_upto_id=checkpoint.pk
        )
        make = Message.objects.create
        owner = dialogue.owner
        for question, reply, status in [
            ("q-failed", "half an answ", "failed"),
            ("q-stopped", "", "stopped"),
            ("q-empty", "", "complete"),
        ]:
            make(dialogue=dialogue, user=owner, role="user", content=question)
            make(
                dialogue=dialogue,
                user=owner,
                role="assistant",
                content=reply,
                status=status,
            )
        make(dialogue=dialogue, user=owner, role="user", content="q-new")
        reply = make(
            dialogue=dialogue, user=owner, role="assistant", status="streaming"
        )
        return Dialogue.objects.get(pk=dialogue.pk), reply

    dialogue, reply = await database_sync_to_async(build)()

    # when the context for the new reply is built
    result = await context_build(
        dialogue=dialogue,
        model=_small_spec(),
        llm=ScriptedLLM(),
        upto_message_id=reply.pk,
    )

    # then one system message holds prompt and summary, the turns alternate strictly
    # from `user` to the new `user` message, and the unanswered questions are merged
    messages = result.messages
    assert _strictly_alternating(messages), [m["role"] for m in messages]
    assert [m["role"] for m in messages].count("system") == 1
    assert messages[0]["content"] == (
        SYSTEM_PROMPT + "\n\n" + SUMMARY_PREFIX + SUMMARY_TEXT
    )
    assert messages[-1]["content"] == "q-failed\n\nq-stopped\n\nq-empty\n\nq-new"
    assert "half an answ" not in [m["content"] for m in messages]


@pytest.mark.django_db(transaction=True)
async def test_a_window_opening_on_a_reply_starts_with_the_user():
    # given a window so small that its oldest fitting turn is an assistant reply
    def build():
        dialogue = make_dialogue(40, system_prompt="")
        reply = Message.objects.create(
            dialogue=dialogue,
            user=dialogue.owner,
            role="assistant",
            status="streaming",
        )
        return dialogue, reply

    dialogue, reply = await database_sync_to_async(build)()
    for budget in range(300, 420, 7):  # some budget opens on an assistant turn
        result = await context_build(
            dialogue=dialogue,
            model=_small_spec(),
            llm=ScriptedLLM(error=LLMError("no summary")),
            upto_message_id=reply.pk,
            budget=budget,
        )
        roles = [m["role"] for m in result.messages]
        # (the last eligible turn is an answer: the gauge's view, no new question)
        assert roles[0] == "user", (budget, roles)
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), roles
