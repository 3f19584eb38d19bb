"""Attachments through the chat socket: `message.send` with `attachments`, what the
model received (the fake upstream describes it), refusals before the model call,
and edit and regenerate keeping the turn's files."""

from __future__ import annotations

import io

import pytest
from channels.db import database_sync_to_async

from attachments.models import Attachment
from attachments.services import attachment_upload
from attachments.testing import pdf_bytes, png_bytes
from conversations.models import Message
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def vision(fake_openai, settings):
    settings.CHAT_MODELS = "fake-model:8192:vision,fake-small:2048"
    return fake_openai


@database_sync_to_async
def uploaded(user, data: bytes, name: str) -> int:
    row = attachment_upload(user=user, file=io.BytesIO(data), name=name, size=len(data))
    return row.pk


@database_sync_to_async
def names_on(message_id: int) -> list[str]:
    return list(
        Attachment.objects.filter(message_id=message_id)
        .order_by("id")
        .values_list("name", flat=True)
    )


def send(
    content: str, ids: list[int], *, client_id: str = "c-1", dialogue=None, **extra
):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
        "attachments": ids,
        **extra,
    }


def reply_requests(fake) -> list[dict]:
    """What the fake received per reply (streamed), not per title request."""
    return [
        found
        for found, body in zip(fake.received, fake.chat_requests, strict=True)
        if body.get("stream")
    ]


async def test_a_message_with_a_picture_and_a_pdf_reaches_the_vision_model(
    user, vision, socket_for
):
    picture = await uploaded(user, png_bytes(640, 480), "cat.png")
    document = await uploaded(user, pdf_bytes(["Revenue grew"]), "q3.pdf")

    async with socket_for(user) as ws:
        await ws.send(send("What is this?", [picture, document]))
        frames = await ws.until("reply.completed")

    created = next(f for f in frames if f["type"] == "message.created")["message"]
    assert [a["name"] for a in created["attachments"]] == ["cat.png", "q3.pdf"]
    assert created["attachments"][0] == {
        "id": picture,
        "url": f"/attachments/{picture}/",
        "name": "cat.png",
        "content_type": "image/jpeg",
        "size": created["attachments"][0]["size"],
        "kind": "image",
        "width": 640,
        "height": 480,
    }
    assert frames[-1]["message"]["content"] == (
        "I received 1 picture (640x480) and 1 document (q3.pdf)."
    )
    received = reply_requests(vision)[-1]
    assert [(p["source"], p["width"], p["height"]) for p in received["pictures"]] == [
        ("data", 640, 480)
    ]
    assert [d["name"] for d in received["documents"]] == ["q3.pdf"]
    assert await names_on(created["id"]) == ["cat.png", "q3.pdf"]


async def test_a_message_may_be_only_a_file(user, vision, socket_for):
    document = await uploaded(user, b"just this", "n.txt")

    async with socket_for(user) as ws:
        await ws.send(send("", [document]))
        frames = await ws.until("reply.completed")

    assert frames[-1]["message"]["content"] == "I received 1 document (n.txt)."


async def test_a_picture_for_a_model_without_vision_is_refused_before_the_call(
    user, vision, socket_for
):
    picture = await uploaded(user, png_bytes(), "cat.png")

    async with socket_for(user) as ws:
        await ws.send(send("What is this?", [picture], model="fake-small"))
        error = await ws.recv()

    assert error["type"] == "error" and error["code"] == "bad_request"
    assert error["ref"] == "c-1"
    assert "fake-small cannot see pictures" in error["message"]
    assert "fake-model" in error["message"]
    assert vision.chat_requests == []
    assert not await database_sync_to_async(Message.objects.exists)()
    assert await names_on(None) == ["cat.png"]  # still unsent, ready to go again


async def test_someone_elses_or_an_already_sent_upload_is_not_found(
    user, vision, socket_for
):
    foreign = await uploaded(await database_sync_to_async(UserFactory)(), b"x", "a.txt")
    mine = await uploaded(user, b"y", "b.txt")

    async with socket_for(user) as ws:
        await ws.send(send("one", [foreign], client_id="c-1"))
        first = await ws.recv()
        await ws.send(send("two", [mine], client_id="c-2"))
        await ws.until("reply.completed")
        await ws.send(send("three", [mine], client_id="c-3"))
        third = await ws.recv()

    assert first["code"] == third["code"] == "not_found"
    assert first["message"] == third["message"]


async def test_the_per_message_limits_are_enforced(user, vision, socket_for, settings):
    settings.ATTACHMENT_MAX_MESSAGE_BYTES = 15
    ids = [await uploaded(user, b"0123456789", f"{i}.txt") for i in range(2)]

    async with socket_for(user) as ws:
        await ws.send(send("both", ids))
        error = await ws.recv()
        await ws.send(send("many", list(range(1, 13)), client_id="c-2"))
        many = await ws.recv()
        await ws.send(send("bad", ["x"], client_id="c-3"))
        bad = await ws.recv()

    assert error["code"] == "too_large" and "add up to" in error["message"]
    assert many["code"] == "too_large" and "at most 10" in many["message"]
    assert bad["code"] == "bad_request"


async def test_regenerate_and_edit_keep_the_turns_files(user, vision, socket_for):
    picture = await uploaded(user, png_bytes(32, 24), "cat.png")

    async with socket_for(user) as ws:
        await ws.send(send("What is this?", [picture]))
        frames = await ws.until("reply.completed")
        dialogue = frames[0]["dialogue"]["id"]
        await ws.send({"type": "reply.regenerate", "dialogue": dialogue})
        regenerated = await ws.until("reply.completed")
        await ws.send(
            {
                "type": "message.edit",
                "dialogue": dialogue,
                "content": "And now?",
                "client_id": "c-2",
            }
        )
        edited = await ws.until("reply.completed")

    assert regenerated[-1]["message"]["content"] == "I received 1 picture (32x24)."
    created = next(f for f in edited if f["type"] == "message.created")["message"]
    assert [a["name"] for a in created["attachments"]] == ["cat.png"]
    assert created["attachments"][0]["id"] != picture  # the edit's own row…
    assert edited[-1]["message"]["content"] == "I received 1 picture (32x24)."
    keys = await database_sync_to_async(
        lambda: set(Attachment.objects.values_list("storage_key", flat=True))
    )()
    assert len(keys) == 1  # …sharing the stored file
    assert [len(r["pictures"]) for r in reply_requests(vision)] == [1, 1, 1]


async def test_a_resend_after_a_reconnect_answers_the_stored_message_with_its_files(
    user, vision, socket_for
):
    document = await uploaded(user, b"notes", "n.txt")

    async with socket_for(user) as ws:
        await ws.send(send("Read", [document]))
        await ws.until("reply.completed")
    async with socket_for(user) as ws:
        await ws.send(send("Read", [document]))
        frames = await ws.until("message.created")

    assert [a["name"] for a in frames[-1]["message"]["attachments"]] == ["n.txt"]
    assert len(reply_requests(vision)) == 1
