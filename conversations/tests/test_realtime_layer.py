"""The channel layer (conversations/realtime/layer.py) and its Redis transport
(resp.py) against real Redis, and in memory: two `ChatLayer`s stand for two
processes."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from conversations.realtime import resp
from conversations.realtime.layer import ChatLayer, decode_message, encode_message

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs REDIS_URL")


@pytest.fixture
async def layers():
    made: list[ChatLayer] = []

    def make(**kwargs) -> ChatLayer:
        layer = ChatLayer(url=settings.REDIS_URL, prefix="test-layer", **kwargs)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        await layer.close()


@needs_redis
async def test_a_group_message_reaches_members_on_every_process_in_order(layers):
    a, b = layers(), layers()
    ca, cb = await a.new_channel(), await b.new_channel()
    await a.group_add("dialogue.1", ca)
    await b.group_add("dialogue.1", cb)
    for i in range(50):
        await a.group_send("dialogue.1", {"type": "x.y", "i": i})
    for layer, channel in ((a, ca), (b, cb)):
        got = [await asyncio.wait_for(layer.receive(channel), 2) for _ in range(50)]
        assert [m["i"] for m in got] == list(range(50))


@needs_redis
async def test_group_discard_stops_delivery(layers):
    a, b = layers(), layers()
    cb = await b.new_channel()
    await b.group_add("dialogue.2", cb)
    await b.group_discard("dialogue.2", cb)
    await a.group_send("dialogue.2", {"type": "x.y"})
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(b.receive(cb), 0.3)


@needs_redis
async def test_send_reaches_a_channel_of_another_process(layers):
    a, b = layers(), layers()
    worker = await b.new_channel("chatsite.worker.")
    await a.send(worker, {"type": "reply.stop", "message_id": 7, "seq": None})
    got = await asyncio.wait_for(b.receive(worker), 2)
    assert got == {"type": "reply.stop", "message_id": 7, "seq": None}


@needs_redis
async def test_a_full_channel_drops_and_counts(layers):
    a = layers(capacity=3)
    channel = await a.new_channel()
    await a.group_add("dialogue.3", channel)
    for i in range(5):
        await a.group_send("dialogue.3", {"type": "x.y", "i": i})
    await asyncio.sleep(0.1)
    assert [(await a.receive(channel))["i"] for _ in range(3)] == [0, 1, 2]
    assert a.hub().dropped == 2


@needs_redis
async def test_subscriptions_come_back_after_redis_drops_the_connection(layers):
    a, b = layers(), layers()
    cb = await b.new_channel()
    await b.group_add("dialogue.4", cb)
    # when Redis drops b's subscriber connection
    admin = resp.Connection(resp.Address.from_url(settings.REDIS_URL), "admin")
    try:
        clients = (await admin.call("CLIENT", "LIST", "TYPE", "pubsub")).decode()
        name = f"name=chatsite-{b.hub().process}-events"
        ids = [
            line.split()[0].removeprefix("id=")
            for line in clients.splitlines()
            if name in line.split()
        ]
        assert len(ids) == 1
        await admin.call("CLIENT", "KILL", "ID", ids[0])
        for _ in range(100):
            await asyncio.sleep(0.05)
            if b.hub().subscriber.connected and not b.hub().subscriber.confirming:
                break
        await a.group_send("dialogue.4", {"type": "x.y", "after": True})
        got = await asyncio.wait_for(b.receive(cb), 2)
        assert got == {"type": "x.y", "after": True}
    finally:
        await admin.close()


async def test_events_round_trip_through_the_wire_format():
    event = {"type": "chat.event", "frame": '{"a":"é\\n"}', "mid": 3, "seq": 9}
    assert decode_message(encode_message(event)) == event
    other = {"type": "reply.stop", "message_id": 1, "seq": None}
    assert decode_message(encode_message(other)) == other


@needs_redis
async def test_the_transport_speaks_resp2_and_reports_errors():
    conn = resp.Connection(resp.Address.from_url(settings.REDIS_URL))
    try:
        info = await conn.call("CLIENT", "INFO")
        assert b"resp=2" in info.split()
        # pipelined: replies come back to their own callers
        results = await asyncio.gather(*(conn.call("ECHO", str(i)) for i in range(20)))
        assert results == [str(i).encode() for i in range(20)]
        with pytest.raises(resp.RedisError):
            await conn.call("NOSUCHCOMMAND")
        assert await conn.call("PING") == b"PONG"
    finally:
        await conn.close()


def test_redis_urls_are_read_like_redis_py():
    a = resp.Address.from_url("rediss://user:p%40ss@example.org:6380/3")
    assert (a.host, a.port, a.db, a.username, a.password, a.tls) == (
        "example.org",
        6380,
        3,
        "user",
        "p@ss",
        True,
    )
    assert resp.Address.from_url("redis://localhost").db == 0
    assert resp.Address.from_url("unix:///tmp/r.sock?db=2").path == "/tmp/r.sock"


async def test_in_memory_layer_delivers_groups_and_sends():
    layer = ChatLayer(url=None)
    one, two = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("dialogue.5", one)
    await layer.group_add("dialogue.5", two)
    await layer.group_send("dialogue.5", {"type": "x.y"})
    assert await layer.receive(one) == {"type": "x.y"}
    assert await layer.receive(two) == {"type": "x.y"}
    await layer.send(one, {"type": "a.b"})
    assert await layer.receive(one) == {"type": "a.b"}


@needs_redis
async def test_the_subscriber_answers_pings_with_and_without_subscriptions():
    got: list[tuple[bytes, bytes]] = []
    sub = resp.Subscriber(
        resp.Address.from_url(settings.REDIS_URL), lambda c, d: got.append((c, d))
    )
    try:
        await asyncio.wait_for(sub.ping(), 2)  # plain +PONG
        await asyncio.wait_for(sub.subscribe(b"test-layer:x"), 2)
        await asyncio.wait_for(sub.ping(), 2)  # ["pong", ""] once subscribed
    finally:
        await sub.close()


async def test_events_waiting_together_are_received_as_one_batch():
    layer = ChatLayer(url=None)
    channel = await layer.new_channel()
    await layer.group_add("dialogue.6", channel)
    events = [
        {"type": "chat.event", "frame": f"{{{i}}}", "mid": 1, "seq": i}
        for i in range(1, 4)
    ]
    for event in events:
        await layer.group_send("dialogue.6", event)
    await layer.send(channel, {"type": "reply.stop"})
    await layer.group_send("dialogue.6", {**events[0], "seq": 4})
    assert await layer.receive(channel) == {"type": "chat.events", "events": events}
    assert await layer.receive(channel) == {"type": "reply.stop"}
    assert (await layer.receive(channel))["seq"] == 4  # alone: as it was sent
