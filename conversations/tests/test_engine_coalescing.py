"""Delta coalescing (services/streaming.py) against a model with exact timing, and the
send gate that keeps a burst of sends from starving running streams."""

from __future__ import annotations

import asyncio

import pytest

from conversations.llm import LLMChunk
from conversations.models import Message
from conversations.services import messaging
from conversations.services.streaming import ReplyControl, reply_stream
from tests.factories import DialogueFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


class PacedLLM:
    """Yields `count` one-token chunks `gap` seconds apart, noting when each left."""

    def __init__(self, count: int, gap: float) -> None:
        self.count, self.gap = count, gap
        self.sent: list[float] = []

    async def stream(self, **kwargs):
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(self.count):
            await asyncio.sleep(max(0.0, start + i * self.gap - loop.time()))
            self.sent.append(loop.time())
            yield LLMChunk(text=f"t{i} ")


async def run(llm: PacedLLM) -> tuple[list[tuple[float, str]], dict]:
    user = await asyncio.to_thread(UserFactory)
    dialogue = await asyncio.to_thread(DialogueFactory, owner=user)
    reply = await Message.objects.acreate(
        dialogue=dialogue,
        user=user,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model="fake-model",
    )
    loop = asyncio.get_running_loop()
    frames, final = [], None
    async for event in reply_stream(
        message=reply, llm=llm, messages=[], control=ReplyControl()
    ):
        if event["type"] == "reply.delta":
            frames.append((loop.time(), event["delta"]))
        else:
            final = event
    return frames, final


def token_delays(llm: PacedLLM, frames: list[tuple[float, str]]) -> list[float]:
    delays = []
    for at, delta in frames:
        for token in delta.split():
            delays.append(at - llm.sent[int(token[1:])])
    return delays


async def test_fifty_tokens_a_second_go_out_in_pairs_the_moment_the_second_arrives(
    settings,
):
    settings.CHAT_DELTA_WINDOW_MS = 40
    llm = PacedLLM(count=100, gap=0.02)
    frames, final = await run(llm)
    assert final["type"] == "reply.completed"
    assert final["message"]["content"] == "".join(d for _, d in frames)
    assert len(token_delays(llm, frames)) == 100
    span = frames[-1][0] - frames[0][0]
    # The cap: one frame per window on average (the first one at once).
    assert len(frames) - 1 <= span / 0.040 + 0.01
    # Pairs, sent when the second token arrives: the first waits one gap, the
    # second not at all (a fixed 40 ms tick would make them wait up to 40 ms).
    pairs = sum(1 for _, d in frames if len(d.split()) == 2)
    assert pairs >= 0.8 * len(frames)
    delays = sorted(token_delays(llm, frames))
    assert sum(delays) / len(delays) < 0.016
    assert delays[int(0.95 * len(delays))] < 0.030


async def test_slow_tokens_each_go_out_at_once(settings):
    settings.CHAT_DELTA_WINDOW_MS = 40
    llm = PacedLLM(count=12, gap=0.06)
    frames, _ = await run(llm)
    assert [len(d.split()) for _, d in frames] == [1] * 12
    assert max(token_delays(llm, frames)) < 0.015


async def test_send_gate_queues_setups_and_gives_way_after_its_wait(
    settings, monkeypatch
):
    settings.CHAT_SEND_CONCURRENCY = 1
    monkeypatch.setattr(messaging, "SEND_GATE_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(messaging, "_gates", type(messaging._gates)())
    order: list[str] = []

    async def setup(name: str, hold: float) -> None:
        async with messaging.send_gate():
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    # One slot: the second waits for the first.
    await asyncio.gather(setup("a", 0.1), setup("b", 0.0))
    assert order == ["a in", "a out", "b in", "b out"]
    # A slot held too long does not hold the next send back past the wait.
    order.clear()
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = asyncio.create_task(setup("slow", 2.0))
    await asyncio.sleep(0.01)
    await setup("next", 0.0)
    assert order == ["slow in", "next in", "next out"]
    assert 0.25 < loop.time() - start < 1.0
    first.cancel()
