"""What one socket follows (conversations/realtime/subscriptions.py), on the
in-memory channel layer."""

from __future__ import annotations

import pytest

from conversations.realtime import Subscriptions
from conversations.realtime import subscriptions as subs
from conversations.realtime.layer import ChatLayer


async def test_the_least_recently_opened_dialogue_is_left_past_the_cap(monkeypatch):
    monkeypatch.setattr(subs, "MAX_SUBSCRIPTIONS", 3)
    layer = ChatLayer(url=None)
    channel = await layer.new_channel()
    socket = Subscriptions(layer, channel)
    for dialogue_id in (1, 2, 3):
        await socket.join(dialogue_id)
    await socket.join(1)  # opened again: now the most recent
    await socket.join(4)  # over the cap: 2 is left
    assert list(socket.dialogues) == [3, 1, 4]
    for dialogue_id in (1, 2, 3, 4):
        await layer.group_send(
            subs.group_name(dialogue_id), {"type": "x", "d": dialogue_id}
        )
    got = [(await layer.receive(channel))["d"] for _ in range(3)]
    assert got == [1, 3, 4]
    await socket.leave_all()
    assert layer.hub().groups == {}


@pytest.mark.parametrize(
    ("mid", "seq", "admitted"),
    [(0, 0, True), (7, 5, False), (7, 6, True), (8, 1, True)],
)
def test_deltas_already_in_a_sent_state_are_not_sent_again(mid, seq, admitted):
    socket = Subscriptions(ChatLayer(url=None), "x")
    socket.shown({7: 5})
    assert socket.admit({"mid": mid, "seq": seq}) is admitted
