"""What one socket follows: the dialogues it shows (channel-layer groups, at most
`MAX_SUBSCRIPTIONS`, the least recently opened left first) and, per reply in flight,
the seq its last `dialogue.state` already contained (deltas at or below it are not
sent again: protocol guarantee 2)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from channels.layers import BaseChannelLayer

MAX_SUBSCRIPTIONS = 50
MAX_FLOORS = 200


def group_name(dialogue_id: int) -> str:
    return f"dialogue.{dialogue_id}"


class Subscriptions:
    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer, self.channel = layer, channel
        self.dialogues: OrderedDict[int, None] = OrderedDict()
        self.floors: dict[int, int] = {}

    async def join(self, dialogue_id: int) -> None:
        """Receive the dialogue's events from now on (returns once that holds)."""
        if dialogue_id in self.dialogues:
            self.dialogues.move_to_end(dialogue_id)
            return
        self.dialogues[dialogue_id] = None
        await self.layer.group_add(group_name(dialogue_id), self.channel)
        if len(self.dialogues) > MAX_SUBSCRIPTIONS:
            oldest, _ = self.dialogues.popitem(last=False)
            await self.layer.group_discard(group_name(oldest), self.channel)

    async def leave_all(self) -> None:
        dialogues, self.dialogues = self.dialogues, OrderedDict()
        for dialogue_id in dialogues:
            await self.layer.group_discard(group_name(dialogue_id), self.channel)

    def shown(self, floors: dict[int, int]) -> None:
        """A `dialogue.state` went out containing these replies up to these seqs."""
        if len(self.floors) > MAX_FLOORS:
            self.floors.clear()
        self.floors.update(floors)

    def admit(self, event: dict[str, Any]) -> bool:
        """Whether a dialogue event is news to this socket."""
        mid = event["mid"]
        if mid:
            floor = self.floors.get(mid)
            if floor is not None and event["seq"] <= floor:
                return False
        return True
