"""The chat gateway (conversations/llm.py) against the fake upstream over real HTTP:
truthful endings, the inactivity watch, readable transport errors, max_tokens."""

from __future__ import annotations

import asyncio

import pytest

from conftest import free_port
from conversations import llm
from conversations.exceptions import ContextLengthExceeded, LLMError


@pytest.fixture
async def clients():
    made = []
    yield made
    for client in made:
        await client.close()


@pytest.fixture
def gateway(clients):
    def make(fake=None, *, base_url=None, inactivity=30.0) -> llm.OpenAIChatLLM:
        client = llm._new_client("test-key", base_url or fake.base_url, 2.0, 30.0, 0)
        clients.append(client)
        return llm.OpenAIChatLLM(client, inactivity=inactivity)

    return make


async def collect(gw: llm.OpenAIChatLLM, **kwargs) -> tuple[str, list[llm.LLMChunk]]:
    chunks = []
    async for chunk in gw.stream(
        model="fake-model", messages=[{"role": "user", "content": "hi"}], **kwargs
    ):
        chunks.append(chunk)
    return "".join(c.text for c in chunks), chunks


async def test_a_body_that_ends_without_finish_or_done_fails_incomplete(
    fake_openai, gateway
):
    # given a server that closes the stream after two chunks, with no end marker
    fake_openai.configure(tokens=6, fault="end_after:2")
    received: list[str] = []
    # when the reply is read
    with pytest.raises(LLMError) as caught:
        async for chunk in gateway(fake_openai).stream(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        ):
            received.append(chunk.text)
    # then it fails as incomplete, after the text that did arrive
    assert caught.value.code == "upstream_incomplete"
    assert "".join(received).split() == ["tok0", "tok1"]
    assert "kept" in caught.value.message


async def test_an_empty_body_is_incomplete_not_a_blank_success(fake_openai, gateway):
    fake_openai.configure(tokens=6, fault="end_after:0")
    with pytest.raises(LLMError) as caught:
        await collect(gateway(fake_openai))
    assert caught.value.code == "upstream_incomplete"
    assert "without sending any text" in caught.value.message


async def test_keep_alive_comments_do_not_reset_the_inactivity_timeout(
    fake_openai, gateway
):
    # given a stuck server that sends `: ping` every 50 ms for 30 s after one token
    fake_openai.configure(tokens=5, fault="ping_after:1", stall_seconds=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    # when it is read with a 0.5 s inactivity timeout
    with pytest.raises(LLMError) as caught:
        await collect(gateway(fake_openai, inactivity=0.5))
    # then it times out after about 0.5 s of no content, pings or not
    assert caught.value.code == "upstream_timeout"
    assert loop.time() - started < 5


async def test_content_keeps_a_slow_stream_alive(fake_openai, gateway):
    # 10 tokens at 5/s: 2 s in all, never 0.5 s without content
    fake_openai.configure(tokens=10, tps=5)
    text, chunks = await collect(gateway(fake_openai, inactivity=0.5))
    assert text.split() == [f"tok{i}" for i in range(10)]
    assert chunks[-1].finish_reason == "stop" or any(c.finish_reason for c in chunks)


async def test_a_refused_connection_is_unavailable_not_a_timeout(gateway):
    port = free_port()  # nothing listens there
    gw = gateway(base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(LLMError) as caught:
        await collect(gw)
    assert caught.value.code == "unavailable"
    assert "timed out" not in caught.value.message


async def test_max_tokens_is_sent_and_a_length_cut_is_reported(fake_openai, gateway):
    fake_openai.configure(tokens=20)
    text, chunks = await collect(gateway(fake_openai), max_tokens=5)
    assert len(text.split()) == 5
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]
    [request] = fake_openai.chat_requests
    assert request["max_tokens"] == 5


def test_a_length_refusal_names_the_window():
    refusal = llm.context_error("Requested tokens (3000) exceed context window of 2048")
    assert isinstance(refusal, ContextLengthExceeded) and refusal.window == 2048
    vllm = llm.context_error(
        "This model's maximum context length is 4096 tokens. However, you requested"
    )
    assert vllm is not None and vllm.window == 4096
    assert llm.context_error("Invalid request (fake).") is None
