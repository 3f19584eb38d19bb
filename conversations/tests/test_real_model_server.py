"""Against a real model server: llama-cpp-python's OpenAI-compatible server with
SmolLM2-135M-Instruct (conversations/testing/llama_server.py, built by
deploy/llama-setup.sh). Part of `make test` and CI: a server that cannot be set up
fails these tests, it never skips them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx2
import pytest
from channels.db import database_sync_to_async

from conversations.models import Dialogue, Message
from conversations.testing import llama_server as llama

pytestmark = [
    pytest.mark.llama,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(900),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture(scope="session")
def llama_python() -> Path:
    return llama.llama_python()


@pytest.fixture(scope="session")
def llama_model(llama_python) -> Path:
    return llama.model_path(llama_python)


def _server(python: Path, model: Path, name: str, n_ctx: int = 2048):
    ARTIFACTS.mkdir(exist_ok=True)
    return llama.LlamaServer(
        python, model, n_ctx=n_ctx, log_path=ARTIFACTS / f"llama-{name}.log"
    )


@pytest.fixture(scope="module")
def real_server(llama_python, llama_model):
    server = _server(llama_python, llama_model, "chatml").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_server(llama_python, llama_model, tmp_path_factory):
    copy = llama.strict_template_copy(
        llama_python,
        llama_model,
        tmp_path_factory.mktemp("strict") / "smollm2-strict.gguf",
    )
    server = _server(llama_python, copy, "strict").start()
    yield server
    server.stop()


def use(settings, server, *, window: int = 2048, max_output: int = 48) -> None:
    settings.OPENAI_BASE_URL = server.base_url
    settings.OPENAI_API_KEY = ""
    settings.CHAT_MODELS = f"{llama.MODEL_ALIAS}:{window}"
    settings.DEFAULT_CHAT_MODEL = llama.MODEL_ALIAS
    settings.LLM_OUTPUT_RESERVE_TOKENS = 256
    settings.CHAT_MAX_REPLY_TOKENS = max_output
    settings.LLM_MAX_RETRIES = 0
    # a long prompt on a busy two-core machine may take a while before its first token
    settings.LLM_INACTIVITY_TIMEOUT = 240
    settings.IMAGE_TOOL_ENABLED = False
    settings.IMAGE_BASE_URL = settings.IMAGE_API_KEY = ""


def send(content, *, dialogue=None, client_id):
    return {
        "type": "message.send",
        "dialogue": dialogue,
        "content": content,
        "client_id": client_id,
    }


async def final_of(ws, timeout=180):
    """Every frame up to the reply's ending; returns (frames, final message)."""
    frames = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.recv(timeout=timeout)
            frames.append(frame)
            if frame["type"] in ("reply.completed", "reply.stopped", "reply.failed"):
                return frames, frame["message"]


@database_sync_to_async
def stored(message_id):
    return Message.objects.get(pk=message_id)


async def test_the_full_sequence_against_a_real_server(
    user, socket_for, settings, real_server
):
    use(settings, real_server)
    async with socket_for(user) as ws:
        # a first message streams, completes with text and usage, and names the dialogue
        await ws.send(send("Name three colours of the rainbow.", client_id="f1"))
        frames, first = await final_of(ws)
        kinds = [f["type"] for f in frames]
        assert kinds[:3] == ["dialogue.created", "message.created", "reply.started"]
        assert "reply.delta" in kinds
        assert first["status"] == "complete" and first["content"].strip()
        assert first["usage"]["completion_tokens"] > 0
        dialogue = first["dialogue"]
        updated = await ws.until("dialogue.updated", timeout=120)
        assert updated[-1]["dialogue"]["title"]

        # a second turn answers with the first in its context
        await ws.send(send("And one more?", dialogue=dialogue, client_id="f2"))
        _, second = await final_of(ws)
        assert second["status"] == "complete" and second["content"].strip()

        # regenerate answers the last message again
        await ws.send({"type": "reply.regenerate", "dialogue": dialogue})
        _, again = await final_of(ws)
        assert again["status"] == "complete" and again["content"].strip()
        assert again["id"] != second["id"]
        assert (await stored(second["id"])).replaced

    # the strict shape is what the real server was sent: it answered every time
    assert (await stored(again["id"])).error_code == ""


async def test_stop_closes_the_upstream_request(
    user, socket_for, settings, real_server
):
    # given a reply that would run for a long time (1,500 tokens)
    use(settings, real_server, max_output=1500)
    async with socket_for(user) as ws:
        await ws.send(
            send(
                "Write the word hello five hundred times, one per line.",
                client_id="s1",
            )
        )
        frames = await ws.until("reply.delta", timeout=180)
        # when it is stopped after its first text
        started = next(f for f in frames if f["type"] == "reply.started")
        await ws.send({"type": "reply.stop", "dialogue": started["dialogue"]})
        _, stopped = await final_of(ws)
    assert stopped["status"] == "stopped"
    # then the server is free at once: it serves one request at a time, so a reply
    # still generating upstream would hold this one for tens of seconds
    began = time.monotonic()
    async with httpx2.AsyncClient(timeout=120) as client:
        answer = await client.post(
            real_server.base_url + "/chat/completions",
            json={
                "model": llama.MODEL_ALIAS,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 1,
            },
        )
    assert answer.status_code == 200
    assert time.monotonic() - began < 10


async def test_a_prompt_over_the_servers_window_never_ends_as_a_blank_complete(
    user, socket_for, settings, real_server
):
    # given a model configured with a window twice the server's real n_ctx (2,048)
    use(settings, real_server, window=4096)
    settings.CHAT_MAX_MESSAGE_CHARS = 100_000
    long_text = " ".join(f"Fact {i}: the river number {i} is long." for i in range(700))
    async with socket_for(user) as ws:
        # when a message longer than the real window is sent
        await ws.send(send(long_text + "\n\nWhich river is first?", client_id="w1"))
        _, final = await final_of(ws)
    # then the server's empty answer is taken as a refusal for length, the context
    # shrunk to half the window and asked again: the reply has text; it is never a
    # blank `complete`
    assert not (final["status"] == "complete" and not final["content"].strip())
    assert final["status"] == "complete", final["error"]


async def test_a_strict_template_answers_every_turn_of_a_30_turn_dialogue(
    user, socket_for, settings, strict_server
):
    use(settings, strict_server, max_output=32)

    @database_sync_to_async
    def make_dialogue():
        return Dialogue.objects.create(
            owner=user,
            model=llama.MODEL_ALIAS,
            system_prompt="You are a friendly assistant. Answer in one sentence.",
        )

    @database_sync_to_async
    def add_summary(dialogue_id):
        last = Message.objects.filter(dialogue_id=dialogue_id).order_by("-id").first()
        Dialogue.objects.filter(pk=dialogue_id).update(
            summary="The user is planning a trip to the mountains.",
            summary_upto_id=last.pk,
        )

    dialogue = await make_dialogue()
    answered = []
    async with socket_for(user) as ws:
        await ws.send({"type": "dialogue.open", "dialogue": dialogue.pk})
        await ws.until("dialogue.state")
        for turn in range(30):
            content = f"Question {turn}: what should I pack for day {turn} of the trip?"
            await ws.send(send(content, dialogue=dialogue.pk, client_id=f"t{turn}"))
            if turn == 3:
                await add_summary(dialogue.pk)
            if turn == 10:
                # stopped before any text: an empty reply in the history
                await ws.until("reply.started", timeout=60)
                await ws.send({"type": "reply.stop", "dialogue": dialogue.pk, "seq": 0})
                _, final = await final_of(ws)
                assert final["status"] == "stopped" and final["content"] == ""
                continue
            if turn == 20:
                # a failed reply: the server was unreachable for this one turn
                settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
                _, final = await final_of(ws)
                settings.OPENAI_BASE_URL = strict_server.base_url
                assert final["status"] == "failed"
                assert final["error"]["code"] == "unavailable"
                continue
            _, final = await final_of(ws)
            assert final["status"] == "complete", (turn, final["error"])
            assert final["content"].strip(), turn
            answered.append(turn)
    assert len(answered) == 28


async def test_a_killed_server_fails_the_reply_with_its_text_and_a_restart_answers(
    user, socket_for, settings, llama_python, llama_model
):
    server = _server(llama_python, llama_model, "killed").start()
    try:
        use(settings, server, max_output=1500)
        async with socket_for(user) as ws:
            await ws.send(
                send("Tell me a very long story about a dragon.", client_id="k1")
            )
            # when the server dies after some text
            deltas = 0
            while deltas < 3:
                frame = await ws.recv(timeout=180)
                deltas += frame["type"] == "reply.delta"
            server.kill()
            _, failed = await final_of(ws)
            # then the reply fails, with the text so far kept and a readable error
            assert failed["status"] == "failed"
            assert failed["content"].strip()
            assert failed["error"]["code"] in (
                "upstream_disconnected",
                "upstream_incomplete",
            )
            # and after a restart the same dialogue answers
            server.start()
            settings.CHAT_MAX_REPLY_TOKENS = 48
            await ws.send(
                send("Now a short one.", dialogue=failed["dialogue"], client_id="k2")
            )
            _, answer = await final_of(ws)
            assert answer["status"] == "complete" and answer["content"].strip()
    finally:
        server.stop()
