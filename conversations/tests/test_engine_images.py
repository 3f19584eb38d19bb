"""The three ways to ask for a picture, through the chat socket, on local media and on
a real S3 server (moto): `/image …` or `image:` in a message, the `image.generate`
frame, and the model's `generate_image` tool call."""

from __future__ import annotations

import urllib.request

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from imaging.models import GeneratedImage

pytestmark = pytest.mark.django_db(transaction=True)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@sync_to_async
def fetch_image(user, url: str) -> tuple[int, bytes]:
    client = Client()
    client.force_login(user)
    response = client.get(url)
    if response.status_code == 302:  # object store: a short-lived presigned URL
        with urllib.request.urlopen(response["Location"], timeout=10) as remote:
            return remote.status, remote.read()
    body = (
        b"".join(response.streaming_content) if response.streaming else response.content
    )
    return response.status_code, body


@sync_to_async
def stored_image(image_id: int) -> GeneratedImage:
    return GeneratedImage.objects.get(pk=image_id)


async def assert_image_shown_and_private(
    ws, dialogue_id, image, user, other_user, storage
):
    assert image["status"] == "complete" and image["url"]
    row = await stored_image(image["id"])
    stored_keys = storage.keys()
    assert row.storage_key in stored_keys
    assert not row.storage_key.startswith("data:") and "http" not in row.storage_key
    assert storage.read(row.storage_key).startswith(PNG_MAGIC)
    await ws.send({"type": "dialogue.open", "dialogue": dialogue_id})
    state = (await ws.until("dialogue.state"))[-1]
    shown = [i for m in state["messages"] for i in m["images"]]
    assert image["id"] in [i["id"] for i in shown]
    status, body = await fetch_image(user, image["url"])
    assert status == 200 and body.startswith(PNG_MAGIC)
    status, _ = await fetch_image(other_user, image["url"])
    assert status == 404


@pytest.mark.parametrize(
    "content", ["/image a red fox in snow", "image: a red fox in snow"]
)
async def test_image_prefix_in_a_message_draws_and_stores_a_picture(
    user,
    other_user,
    fake_openai,
    socket_for,
    storage,
    content,
):
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "message.send",
                "dialogue": None,
                "content": content,
                "client_id": "i1",
            }
        )
        frames = await ws.until("image.completed", timeout=45)
        kinds = [f["type"] for f in frames]
        assert kinds[:3] == ["dialogue.created", "message.created", "image.started"]
        message = frames[-1]["message"]
        assert message["status"] == "complete" and len(message["images"]) == 1
        assert message["images"][0]["prompt"] == "a red fox in snow"
        await assert_image_shown_and_private(
            ws,
            frames[0]["dialogue"]["id"],
            message["images"][0],
            user,
            other_user,
            storage,
        )
    image_requests = [
        r for r in fake_openai.requests if r["path"].endswith("/images/generations")
    ]
    assert len(image_requests) == 1 and not [
        r for r in fake_openai.requests if r["body"].get("stream")
    ]


async def test_image_generate_frame_draws_a_picture(
    user, other_user, fake_openai, socket_for, storage
):
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "image.generate",
                "dialogue": None,
                "prompt": "a lighthouse",
                "client_id": "i2",
                "size": "1024x1024",
            }
        )
        frames = await ws.until("image.completed", timeout=45)
        image = frames[-1]["message"]["images"][0]
        assert image["prompt"] == "a lighthouse"
        await assert_image_shown_and_private(
            ws, frames[0]["dialogue"]["id"], image, user, other_user, storage
        )


async def test_model_tool_call_draws_a_picture_and_the_reply_continues(
    user,
    other_user,
    fake_openai,
    socket_for,
    storage,
):
    fake_openai.configure(
        tool_call={"name": "generate_image", "arguments": {"prompt": "a blue whale"}},
        tokens=8,
    )
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "message.send",
                "dialogue": None,
                "content": "draw me a whale",
                "client_id": "i3",
            }
        )
        frames = await ws.until("reply.completed", timeout=45)
        kinds = [f["type"] for f in frames]
        assert "image.started" in kinds and "image.completed" in kinds
        final = frames[-1]["message"]
        assert final["status"] == "complete" and final["content"], (
            "the model answers after the tool"
        )
        assert [i["prompt"] for i in final["images"]] == ["a blue whale"]
        await assert_image_shown_and_private(
            ws,
            frames[0]["dialogue"]["id"],
            final["images"][0],
            user,
            other_user,
            storage,
        )
    followup = [r["body"] for r in fake_openai.requests if r["body"].get("stream")][-1]
    assert followup["messages"][-1]["role"] == "tool"


@pytest.mark.parametrize("prompt", ["a cat [[policy]]", "a cat [[500]]"])
async def test_refused_or_failed_image_ends_failed_with_a_reason_and_stores_nothing(
    user,
    fake_openai,
    socket_for,
    storage,
    settings,
    prompt,
):
    settings.IMAGE_MAX_RETRIES = 0
    async with socket_for(user) as ws:
        await ws.send(
            {
                "type": "message.send",
                "dialogue": None,
                "content": f"/image {prompt}",
                "client_id": "i4",
            }
        )
        frames = await ws.until("image.failed", timeout=45)
    message = frames[-1]["message"]
    assert message["status"] == "failed"
    assert message["error"]["message"] and len(message["error"]["message"]) > 20
    if "policy" in prompt:
        assert "safety" in message["error"]["message"].lower()
    assert storage.keys() == []
