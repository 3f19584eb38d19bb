"""Every reply ends truthfully and every dialogue stays usable: incomplete and empty
streams fail, length cut-offs keep their text and can be continued, a prompt refused
for length is shrunk and asked again, titles come also from failed first replies."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from conversations.models import Dialogue, Message
from conversations.services import replies
from conversations.services.context import CONTINUE_INSTRUCTION

pytestmark = pytest.mark.django_db(transaction=True)


def send(content="hello", *, dialogue=None, client_id="e-1"):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
    }


async def ending(ws, timeout=20):
    frames = []
    while True:
        frame = await ws.recv(timeout=timeout)
        frames.append(frame)
        if frame["type"] in ("reply.completed", "reply.stopped", "reply.failed"):
            return frames, frame["message"]


@database_sync_to_async
def stored(message_id):
    return Message.objects.get(pk=message_id)


async def test_a_stream_without_an_end_marker_fails_with_its_text_kept(
    user, fake_openai, socket_for
):
    # given a server that closes the body after three chunks, with no finish or [DONE]
    fake_openai.configure(tokens=8, fault="end_after:3")
    async with socket_for(user) as ws:
        await ws.send(send())
        _, final = await ending(ws)
    # then the reply fails as incomplete, keeping the text that arrived
    assert final["status"] == "failed"
    assert final["error"]["code"] == "upstream_incomplete"
    assert final["content"].split() == ["tok0", "tok1", "tok2"]
    assert "kept" in final["error"]["message"]


async def test_an_empty_body_is_never_a_blank_complete(user, fake_openai, socket_for):
    fake_openai.configure(tokens=8, fault="end_after:0")
    async with socket_for(user) as ws:
        await ws.send(send())
        _, final = await ending(ws)
    assert final["status"] == "failed" and final["content"] == ""
    assert final["error"]["code"] == "upstream_incomplete"


async def test_an_empty_completion_is_not_a_success(user, fake_openai, socket_for):
    # given a server that finishes normally without any text
    fake_openai.configure(text="")
    async with socket_for(user) as ws:
        await ws.send(send())
        _, final = await ending(ws)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "upstream_empty"


async def test_max_tokens_is_always_sent_within_the_window(
    user, fake_openai, socket_for, settings
):
    settings.CHAT_MAX_REPLY_TOKENS = 4096
    fake_openai.configure(tokens=5)
    async with socket_for(user) as ws:
        await ws.send(send())
        await ws.send({**send(client_id="e-2"), "model": "fake-small"})
        await ending(ws)
        await ending(ws)
    bodies = [b for b in fake_openai.chat_requests if b.get("stream")]
    by_model = {b["model"]: b["max_tokens"] for b in bodies}
    # fake-model has an 8,192-token window, fake-small 2,048: the cap, or the room
    assert by_model["fake-model"] == 4096
    assert 0 < by_model["fake-small"] < 2048


async def test_a_length_cut_off_keeps_its_text_and_continue_goes_on_in_place(
    user, fake_openai, socket_for, settings
):
    # given replies limited to 5 tokens and a model that would write 12
    settings.CHAT_MAX_REPLY_TOKENS = 5
    fake_openai.configure(tokens=12)
    async with socket_for(user) as ws:
        await ws.send(send("tell me everything"))
        _, cut = await ending(ws)
        # then the reply is complete with its text, and marked cut off
        assert cut["status"] == "complete" and cut["cut_off"] is True
        assert cut["content"].split() == [f"tok{i}" for i in range(5)]
        assert cut["error"] is None

        # when the user continues it
        settings.CHAT_MAX_REPLY_TOKENS = 100
        fake_openai.configure(text="and the rest.")
        await ws.send({"type": "reply.continue", "dialogue": cut["dialogue"]})
        frames, done = await ending(ws)

    # then the same message streams on from its seq and ends complete, not cut off
    started = next(f for f in frames if f["type"] == "reply.started")
    assert started["message"]["id"] == cut["id"]
    assert started["message"]["status"] == "streaming"
    deltas = [f for f in frames if f["type"] == "reply.delta"]
    assert deltas[0]["seq"] == cut["seq"] + 1
    assert done["id"] == cut["id"] and done["status"] == "complete"
    assert done["cut_off"] is False
    assert done["content"] == cut["content"] + "and the rest."
    # and the model was shown its own text and asked to go on, in strict shape
    sent = [b for b in fake_openai.chat_requests if b.get("stream")][-1]["messages"]
    assert [m["role"] for m in sent[-3:]] == ["user", "assistant", "user"]
    assert sent[-2]["content"] == cut["content"]
    assert sent[-1]["content"] == CONTINUE_INSTRUCTION
    assert (await stored(cut["id"])).content == done["content"]


async def test_continue_is_refused_for_a_finished_reply(user, fake_openai, socket_for):
    fake_openai.configure(tokens=3)
    async with socket_for(user) as ws:
        await ws.send(send())
        _, final = await ending(ws)
        await ws.send({"type": "reply.continue", "dialogue": final["dialogue"]})
        error = (await ws.until("error"))[-1]
    assert error["code"] == "bad_request"


async def test_continue_goes_on_after_a_failed_reply_with_text(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=8, fault="error_after:2")
    async with socket_for(user) as ws:
        await ws.send(send())
        _, failed = await ending(ws)
        assert failed["status"] == "failed" and failed["content"]
        fake_openai.configure(text="end.", fault=None)
        await ws.send({"type": "reply.continue", "dialogue": failed["dialogue"]})
        _, done = await ending(ws)
    assert done["id"] == failed["id"] and done["status"] == "complete"
    assert done["error"] is None and done["content"] == failed["content"] + "end."


async def test_a_prompt_refused_for_length_is_shrunk_and_asked_again(
    user, fake_openai, socket_for, settings, monkeypatch
):
    monkeypatch.setattr(replies, "_LEARNT_WINDOWS", {})  # learnt for this test only
    # given a server whose real window (300 tokens) is far below the configured one
    settings.CHAT_MAX_MESSAGE_CHARS = 100_000
    fake_openai.configure(tokens=4, fault="context_length:300")
    long_text = " ".join(f"word{i}" for i in range(2000))
    async with socket_for(user) as ws:
        # when a message longer than that window is sent
        await ws.send(send(long_text))
        _, final = await ending(ws)
    # then it is asked once more within the window it named, and answers
    assert final["status"] == "complete" and final["content"].split()[0] == "tok0"
    streamed = [b for b in fake_openai.chat_requests if b.get("stream")]
    assert len(streamed) == 2
    retried = streamed[1]["messages"][-1]["content"]
    assert len(retried.split()) < 300 < len(streamed[0]["messages"][-1]["content"])
    assert "truncated" in retried
    # and the next reply on this model starts within that window at once
    assert replies._LEARNT_WINDOWS == {"fake-model": 300}


async def test_a_prompt_still_too_long_fails_readably(
    user, fake_openai, socket_for, settings, monkeypatch
):
    monkeypatch.setattr(replies, "_LEARNT_WINDOWS", {})
    # given a server that refuses every prompt as too long
    fake_openai.configure(tokens=4, fault="context_length:1")
    async with socket_for(user) as ws:
        await ws.send(send("hello there"))
        _, final = await ending(ws)
    assert final["status"] == "failed"
    assert final["error"]["code"] == "context_length"
    assert "context window" in final["error"]["message"]
    assert len([b for b in fake_openai.chat_requests if b.get("stream")]) == 2


async def test_a_dialogue_whose_first_reply_failed_gets_a_title(
    user, fake_openai, socket_for
):
    fake_openai.configure(fault="http_500")
    async with socket_for(user) as ws:
        await ws.send(send("Planning a trip to Lisbon in May"))
        _, final = await ending(ws)
        updated = (await ws.until("dialogue.updated"))[-1]
    assert final["status"] == "failed"
    assert updated["dialogue"]["title"] == "Planning a trip to Lisbon in"
    # no model was asked for the title: it had just failed
    assert not [b for b in fake_openai.chat_requests if not b.get("stream")]


async def test_a_dialogue_whose_first_reply_was_stopped_gets_a_title(
    user, fake_openai, socket_for
):
    fake_openai.configure(tokens=200, tps=20)
    async with socket_for(user) as ws:
        await ws.send(send("Why is the sky blue"))
        frames = await ws.until("reply.delta")
        dialogue = frames[0]["dialogue"]["id"]
        await ws.send({"type": "reply.stop", "dialogue": dialogue})
        _, final = await ending(ws)
        updated = (await ws.until("dialogue.updated"))[-1]
    assert final["status"] == "stopped"
    assert updated["dialogue"]["title"] == "Why is the sky blue"


async def test_an_image_dialogue_is_named_after_the_picture(
    user, fake_openai, socket_for, settings
):
    async with socket_for(user) as ws:
        await ws.send(send("/image a lighthouse at dusk"))
        await ws.until("image.completed", timeout=30)
        updated = (await ws.until("dialogue.updated"))[-1]
    assert updated["dialogue"]["title"] == "a lighthouse at dusk"
    stored_title = await Dialogue.objects.filter(pk=updated["dialogue"]["id"]).aget()
    assert stored_title.title == "a lighthouse at dusk"


async def test_usage_the_server_did_not_report_is_marked_estimated(
    user, fake_openai, socket_for, monkeypatch
):
    from conversations import llm

    monkeypatch.setattr(llm, "_PLAIN_MODELS", set())
    # a server that refuses stream_options: no usage is reported
    fake_openai.responder = lambda body: (
        {"fault": "http_400"} if "stream_options" in body else None
    )
    fake_openai.configure(tokens=6)
    async with socket_for(user) as ws:
        await ws.send(send())
        _, final = await ending(ws)
    assert final["usage"]["estimated"] is True
    assert final["usage"]["completion_tokens"] > 0
    assert (await stored(final["id"])).usage_estimated


async def test_an_empty_body_before_any_text_is_asked_again_with_less(
    user, fake_openai, socket_for, settings
):
    # given a server that answers the first request with an empty body (as
    # llama-cpp-python's does for a prompt over its window), then normally
    fake_openai.script([{"fault": "end_after:0"}, {"tokens": 3}])
    async with socket_for(user) as ws:
        await ws.send(send("hello"))
        _, final = await ending(ws)
    # then the reply is asked once more and answers
    assert final["status"] == "complete" and final["content"].split() == [
        "tok0",
        "tok1",
        "tok2",
    ]
    streamed = [b for b in fake_openai.chat_requests if b.get("stream")]
    assert len(streamed) == 2 and streamed[1]["max_tokens"] <= streamed[0]["max_tokens"]
