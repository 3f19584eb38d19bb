"""Delta coalescing (services/coalescing.py) on a fake clock, the reply stream that
runs it, and the send gate that keeps a burst of sends from starving running streams."""

from __future__ import annotations

import asyncio

import pytest

from conversations.asyncdb import db_async
from conversations.llm import LLMChunk
from conversations.models import Message
from conversations.services import messaging
from conversations.services.coalescing import Coalescer
from conversations.services.streaming import ReplyControl, reply_stream
from tests.factories import DialogueFactory, UserFactory

WINDOW = 0.040


def drive(arrivals: list[float], *, window: float = WINDOW) -> list[tuple[float, str]]:
    """Feed token `i` at `arrivals[i]` (fake clock) and tick at every deadline the
    coalescer names, as the reply runner does; returns (time, delta) per frame."""
    co = Coalescer(window=window, now=0.0)
    frames: list[tuple[float, str]] = []
    for i, at in enumerate(arrivals):
        while (deadline := co.deadline()) is not None and deadline <= at:
            frames += [(deadline, d) for d in co.tick(deadline)]
        frames += [(at, d) for d in co.feed(at, f"t{i} ")]
    end = co.flush(arrivals[-1])
    if end is not None:
        frames.append(end)
    return frames


def delays(arrivals: list[float], frames: list[tuple[float, str]]) -> list[float]:
    return [at - arrivals[int(t[1:])] for at, delta in frames for t in delta.split()]


def test_fifty_tokens_a_second_go_out_in_pairs_the_moment_the_second_arrives():
    arrivals = [i * 0.020 for i in range(100)]
    frames = drive(arrivals)
    # every token exactly once, in order
    assert "".join(d for _, d in frames) == "".join(f"t{i} " for i in range(100))
    # the cap: one frame per window on average (the first one at once)
    span = frames[-1][0] - frames[0][0]
    assert len(frames) - 1 <= span / WINDOW + 1e-6
    # pairs, sent when the second token arrives: the first waits one gap, the
    # second not at all (a fixed 40 ms tick would make them wait up to 40 ms)
    pairs = sum(1 for _, d in frames if len(d.split()) == 2)
    assert pairs >= 0.9 * len(frames)
    waits = sorted(delays(arrivals, frames))
    assert max(waits) <= 0.020 + 1e-9
    assert sum(waits) / len(waits) <= 0.011


def test_slow_tokens_each_go_out_at_once():
    arrivals = [i * 0.060 for i in range(12)]
    frames = drive(arrivals)
    assert [len(d.split()) for _, d in frames] == [1] * 12
    assert max(delays(arrivals, frames)) == 0


def test_a_burst_waits_for_credit_then_goes_out_in_one_frame():
    co = Coalescer(window=WINDOW, now=0.0)
    assert co.feed(0.0, "a") == ["a"]  # the first text at once
    assert co.feed(0.001, "b") == []  # no credit before 0.040
    assert co.feed(0.002, "c") == []
    assert co.ready_at() == pytest.approx(0.040)
    assert co.deadline() == pytest.approx(0.040)  # two waiting: no pairing hold
    assert co.tick(0.039) == []
    assert co.tick(0.040) == ["bc"]


def test_credit_banked_while_idle_is_capped():
    co = Coalescer(window=WINDOW, now=0.0)
    assert co.feed(0.0, "a") == ["a"]
    # a long pause banks at most 1.5 frames: one goes now, the next half a window on
    assert co.feed(10.0, "b") == ["b"]
    assert co.feed(10.001, "c", pieces=2) == []
    assert co.ready_at() == pytest.approx(10.020)


def test_flush_keeps_the_cap_unless_stopped():
    co = Coalescer(window=WINDOW, now=0.0)
    co.feed(0.0, "a")
    co.feed(0.010, "b")
    assert co.flush(0.011) == (pytest.approx(0.040), "b")
    co.feed(0.041, "c")
    assert co.flush(0.042, wait=False) == (0.042, "c")
    assert co.flush(0.050) is None


@pytest.mark.django_db(transaction=True)
async def test_reply_stream_sends_every_token_once_and_stores_them(settings):
    class ModelLLM:
        async def stream(self, **kwargs):
            for i in range(30):
                await asyncio.sleep(0.002)
                yield LLMChunk(text=f"t{i} ")

    settings.CHAT_DELTA_WINDOW_MS = 10
    user = await db_async(UserFactory)()
    dialogue = await db_async(DialogueFactory)(owner=user)
    reply = await Message.objects.acreate(
        dialogue=dialogue,
        user=user,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model="fake-model",
    )
    events = [
        e
        async for e in reply_stream(
            message=reply, llm=ModelLLM(), messages=[], control=ReplyControl()
        )
    ]
    deltas = [e for e in events[:-1] if e["type"] == "reply.delta"]
    assert [e["seq"] for e in deltas] == list(range(1, len(deltas) + 1))
    text = "".join(e["delta"] for e in deltas)
    assert text == "".join(f"t{i} " for i in range(30))
    assert events[-1]["type"] == "reply.completed"
    assert events[-1]["message"]["content"] == text
    saved = await Message.objects.aget(pk=reply.pk)
    assert (saved.content, saved.seq) == (text, len(deltas))


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
