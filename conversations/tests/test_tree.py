"""The message tree: edits and regenerates make siblings, `branch.switch` shows another
branch on every device, the model's context follows the shown branch, and opening a
large branched dialogue costs a fixed number of queries."""

from __future__ import annotations

import importlib
import re

import pytest
from channels.db import database_sync_to_async
from django.apps import apps
from django.urls import reverse

from conversations import selectors
from conversations.models import Message
from conversations.services import tree
from tests.factories import DialogueFactory


def _said(body) -> list[str]:
    return [
        m["content"] for m in body["messages"] if m["role"] in ("user", "assistant")
    ]


def _streams(fake) -> list[list[str]]:
    """The conversation each reply request carried, as the model received it."""
    return [_said(r["body"]) for r in fake.requests if r["body"].get("stream")]


def _path(state) -> list[str]:
    return [m["content"] for m in state["messages"]]


@pytest.mark.django_db(transaction=True)
async def test_edits_and_regenerates_branch_and_every_branch_has_its_own_context(
    user, fake_openai, socket_for
):
    async def turn(ws, frame, text):
        fake_openai.configure(text=text)
        await ws.send(frame)
        return await ws.until("reply.completed")

    async with socket_for(user) as ws:
        # given a dialogue of two turns
        first = await turn(
            ws,
            {
                "type": "message.send",
                "dialogue": None,
                "content": "q1",
                "client_id": "1",
            },
            "A1",
        )
        d = first[0]["dialogue"]["id"]

        def send(text, cid, kind="message.send"):
            return {"type": kind, "dialogue": d, "content": text, "client_id": cid}

        await turn(ws, send("q2", "2"), "A2")
        # when the last reply is regenerated twice and the question edited twice
        await turn(ws, {"type": "reply.regenerate", "dialogue": d}, "B2")
        regen = await turn(ws, {"type": "reply.regenerate", "dialogue": d}, "C2")
        await turn(ws, send("q2 edited", "3", "message.edit"), "E")
        edit = await turn(ws, send("q2 again", "4", "message.edit"), "F")

        # then each request carried its own branch, nothing of the others
        assert _streams(fake_openai) == [
            ["q1"],
            ["q1", "A1", "q2"],
            ["q1", "A1", "q2"],
            ["q1", "A1", "q2"],
            ["q1", "A1", "q2 edited"],
            ["q1", "A1", "q2 again"],
        ]
        # and every new message says where it hangs
        created = next(f for f in edit if f["type"] == "message.created")["message"]
        reply = edit[-1]["message"]
        a1 = first[-1]["message"]["id"]
        assert created["parent"] == a1 and reply["parent"] == created["id"]
        c2 = regen[-1]["message"]
        q2 = c2["parent"]

        # when another device opens the dialogue
        async with socket_for(user) as other:
            await other.send({"type": "dialogue.open", "dialogue": d})
            state = await other.recv()
            assert _path(state) == ["q1", "A1", "q2 again", "F"]
            q2_again = state["messages"][2]
            assert len(q2_again["siblings"]) == 3
            assert q2_again["siblings"].index(q2_again["id"]) == 2  # ‹ 3 / 3 ›
            assert q2_again["siblings"][0] == q2
            assert state["messages"][3]["siblings"] == [reply["id"]]

            # and switches to the first wording: both devices show its newest answer
            await other.send({"type": "branch.switch", "dialogue": d, "message": q2})
            switched = await other.until("dialogue.state")
            mine = await ws.until("dialogue.state")
            assert _path(switched[-1]) == _path(mine[-1]) == ["q1", "A1", "q2", "C2"]
            answers = switched[-1]["messages"][3]["siblings"]
            assert len(answers) == 3 and answers[-1] == c2["id"]

            # and to the second answer, then goes on from there
            await other.send(
                {"type": "branch.switch", "dialogue": d, "message": answers[1]}
            )
            state = (await other.until("dialogue.state"))[-1]
            assert _path(state) == ["q1", "A1", "q2", "B2"]
            await ws.until("dialogue.state")
            await turn(other, send("q3", "5"), "G")
        assert _streams(fake_openai)[-1] == ["q1", "A1", "q2", "B2", "q3"]

    # then a reload anywhere shows the branch last chosen
    async with socket_for(user) as later:
        await later.send({"type": "dialogue.open", "dialogue": d})
        state = await later.recv()
    assert _path(state) == ["q1", "A1", "q2", "B2", "q3", "G"]


@pytest.mark.django_db(transaction=True)
async def test_switching_is_refused_for_someone_elses_dialogue_or_message(
    user, other_user, fake_openai, socket_for
):
    fake_openai.configure(tokens=2)
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "message.send",
                "dialogue": None,
                "content": "hi",
                "client_id": "x",
            }
        )
        frames = await ws.until("reply.completed")
    d = frames[0]["dialogue"]["id"]
    mine = frames[-1]["message"]["id"]
    elsewhere = await database_sync_to_async(
        lambda: (
            Message.objects.create(
                dialogue=DialogueFactory(owner=user),
                user=user,
                role="user",
                content="x",
            ).pk
        )
    )()
    async with socket_for(other_user) as ws:
        await ws.send({"type": "branch.switch", "dialogue": d, "message": mine})
        assert (await ws.recv())["code"] == "not_found"
    async with socket_for(user) as ws:
        await ws.send({"type": "branch.switch", "dialogue": d, "message": elsewhere})
        assert (await ws.recv())["code"] == "not_found"
        await ws.send({"type": "branch.switch", "dialogue": d, "message": "1"})
        assert (await ws.recv())["code"] == "bad_request"


def _branchy(user, turns: int, every: int = 5):
    """A dialogue of `turns` turns on its shown branch, and at every `every`-th turn
    two more answers and one more wording with its answer (off the branch)."""
    dialogue = DialogueFactory(owner=user)
    parent = None
    for i in range(turns):
        q = Message.objects.create(
            dialogue=dialogue, user=user, role="user", content=f"q{i}", parent=parent
        )
        if i % every == 0:
            for k in range(2):
                Message.objects.create(
                    dialogue=dialogue, user=user, role="assistant",
                    content=f"old a{i}.{k}", parent=q, replaced=True,
                )  # fmt: skip
            alt = Message.objects.create(
                dialogue=dialogue, user=user, role="user",
                content=f"alt q{i}", parent=parent, replaced=True,
            )  # fmt: skip
            Message.objects.create(
                dialogue=dialogue, user=user, role="assistant",
                content=f"alt a{i}", parent=alt, replaced=True,
            )  # fmt: skip
        parent = Message.objects.create(
            dialogue=dialogue, user=user, role="assistant", content=f"a{i}", parent=q
        )
    return dialogue


@pytest.mark.django_db
@pytest.mark.parametrize("turns", [10, 1800])
def test_opening_a_branched_dialogue_costs_the_same_queries_whatever_its_size(
    user, turns, django_assert_num_queries
):
    # given a dialogue of 10 or 1,800 turns (5,040 messages), branched every 5th turn
    dialogue = _branchy(user, turns)
    if turns == 1800:
        assert Message.objects.filter(dialogue=dialogue).count() == 5040

    # when it is opened: the dialogue, the page, its images, attachments, siblings
    with django_assert_num_queries(5):
        found = selectors.dialogue_get_for_user(dialogue_id=dialogue.pk, user=user)
        page, has_more = selectors.message_page(dialogue=found)

    # then the page is the newest of the shown branch, each message with its siblings
    assert [m.content for m in page][-2:] == [f"q{turns - 1}", f"a{turns - 1}"]
    branched = (turns - 1) // 5 * 5
    q = next(m for m in page if m.content == f"q{branched}")
    a = next(m for m in page if m.content == f"a{branched}")
    assert len(q.siblings) == 2 and len(a.siblings) == 3
    assert has_more is (turns * 2 > 50)


@pytest.mark.django_db
def test_switching_a_large_dialogue_costs_a_fixed_number_of_queries(
    user, django_assert_max_num_queries
):
    dialogue = _branchy(user, 1800)
    old = Message.objects.get(dialogue=dialogue, content="alt q5")
    # the dialogue, a savepoint and its release, the lock, the (id, parent) list, two
    # flag updates, the new state's page, images, attachments, siblings: any size
    with django_assert_max_num_queries(11):
        state = tree.branch_switch(
            user=user, dialogue_id=dialogue.pk, message_id=old.pk
        )
    assert _path(state)[-2:] == ["alt q5", "alt a5"]
    shown = list(
        Message.objects.filter(dialogue=dialogue, replaced=False)
        .order_by("id")
        .values_list("content", flat=True)
    )
    assert shown == [c for i in range(5) for c in (f"q{i}", f"a{i}")] + [
        "alt q5",
        "alt a5",
    ]


@pytest.mark.django_db
def test_the_first_paint_shows_the_chosen_branch_only(client, user):
    dialogue = _branchy(user, 3, every=2)
    client.force_login(user)
    html = client.get(reverse("chat-dialogue", args=[dialogue.pk])).content.decode()
    bodies = re.findall(r'<div class="msg-body">(?:<p>)?([^<]*)', html)
    assert [b for b in bodies if b] == ["q0", "a0", "q1", "a1", "q2", "a2"]


@pytest.mark.django_db
def test_the_migration_turns_replaced_turns_into_siblings(user):
    # given turns stored before the tree: q1 a1, q2 edited into q2', a2' regenerated
    dialogue = DialogueFactory(owner=user)
    rows = [
        ("user", "q1", False), ("assistant", "a1", False),
        ("user", "q2", True), ("assistant", "a2", True),
        ("user", "q2'", False), ("assistant", "a2'", True), ("assistant", "a2''", False),
    ]  # fmt: skip
    made = {
        content: Message.objects.create(
            dialogue=dialogue, user=user, role=role, content=content, replaced=replaced
        )
        for role, content, replaced in rows
    }
    migration = importlib.import_module("conversations.migrations.0004_message_tree")

    migration.set_parents(apps, None)

    parent = {
        m.content: (m.parent.content if m.parent else None)
        for m in Message.objects.filter(dialogue=dialogue)
    }
    assert parent == {
        "q1": None, "a1": "q1", "q2": "a1", "a2": "q2", "q2'": "a1",
        "a2'": "q2'", "a2''": "q2'",
    }  # fmt: skip
    page, _ = selectors.message_page(dialogue=dialogue)
    by = {m.content: m for m in page}
    assert [m.content for m in page] == ["q1", "a1", "q2'", "a2''"]
    assert by["q2'"].siblings == [made["q2"].pk, made["q2'"].pk]
    assert by["a2''"].siblings == [made["a2'"].pk, made["a2''"].pk]


@pytest.mark.django_db
def test_a_switch_below_the_context_summary_drops_it(user):
    # given a branched dialogue whose context summary covers its first ten turns
    dialogue = _branchy(user, 12)
    covered = Message.objects.get(dialogue=dialogue, content="a9")
    dialogue.summary, dialogue.summary_upto_id, dialogue.summary_tokens = (
        "s",
        covered.pk,
        5,
    )
    dialogue.save()

    # when the branch changes after the summary, it stays; before it, it goes
    late = Message.objects.get(dialogue=dialogue, content="alt q10")
    tree.branch_switch(user=user, dialogue_id=dialogue.pk, message_id=late.pk)
    dialogue.refresh_from_db()
    assert dialogue.summary_upto_id == covered.pk
    early = Message.objects.get(dialogue=dialogue, content="alt q5")
    tree.branch_switch(user=user, dialogue_id=dialogue.pk, message_id=early.pk)
    dialogue.refresh_from_db()
    assert (dialogue.summary, dialogue.summary_upto_id) == ("", None)
