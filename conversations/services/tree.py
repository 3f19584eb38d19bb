"""The message tree: branches, and which one a dialogue shows.

Every message has a parent (models.Message.parent). The messages not `replaced` are
exactly the active branch, a path from a first turn to a leaf: that is what every
device shows, what the context sends to the model and what a send continues. An
edit or a regenerate adds a sibling and moves the path onto it (services.messaging);
`branch_switch` moves it onto any other branch, by flipping `replaced` on the
messages that leave and join the path: two UPDATEs, whatever the dialogue's size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.db import transaction

from .. import realtime, selectors
from ..asyncdb import db_async
from ..exceptions import BadRequest, Busy, MessageNotFound
from ..models import Dialogue, Message
from ..serializers import dialogue_dict, message_dict


def branch_path(*, rows: list[tuple[int, int | None]], message_id: int) -> list[int]:
    """The ids of the branch through `message_id`, root first: its ancestors, it,
    and below it the newest child at every step. `rows` are (id, parent id)."""
    parent_of = dict(rows)
    newest_child: dict[int, int] = {}
    for pk, parent in rows:
        if parent is not None and pk > newest_child.get(parent, 0):
            newest_child[parent] = pk
    up: list[int] = []
    node: int | None = message_id
    while node is not None:
        up.append(node)
        node = parent_of.get(node)
    path = up[::-1]
    node = message_id
    while node in newest_child:
        node = newest_child[node]
        path.append(node)
    return path


def state_event(dialogue: Dialogue) -> dict[str, Any]:
    """A `dialogue.state` of the active branch with nothing streaming in it."""
    messages, has_more = selectors.message_page(dialogue=dialogue)
    return {
        "type": "dialogue.state",
        "dialogue": dialogue_dict(dialogue),
        "messages": [message_dict(m) for m in messages],
        "has_more": has_more,
    }


def branch_switch(*, user: Any, dialogue_id: Any, message_id: Any) -> dict[str, Any]:
    """Make the branch through `message_id` the dialogue's shown one; the new
    `dialogue.state`. Refused (`Busy`) while a reply is streaming in the dialogue."""
    if not isinstance(message_id, int) or isinstance(message_id, bool):
        raise BadRequest("`message` must be a message id (an integer).")
    dialogue = selectors.dialogue_get_for_user(dialogue_id=dialogue_id, user=user)
    with transaction.atomic():
        # Locks the dialogue: a send or another switch waits for this one.
        Dialogue.objects.select_for_update().filter(pk=dialogue.pk).first()
        rows = list(
            Message.objects.filter(dialogue=dialogue)
            .order_by("id")
            .values_list("id", "parent_id", "replaced", "status")
        )
        if not any(pk == message_id for pk, *_ in rows):
            raise MessageNotFound()
        if any(status == Message.Status.STREAMING for *_, status in rows):
            raise Busy()
        new = set(branch_path(rows=[(r[0], r[1]) for r in rows], message_id=message_id))
        old = {pk for pk, _, replaced, _ in rows if not replaced}
        if new != old:
            leaving = sorted(old - new)
            Message.objects.filter(pk__in=leaving).update(replaced=True)
            Message.objects.filter(pk__in=sorted(new - old)).update(replaced=False)
            upto = dialogue.summary_upto_id
            if leaving and upto is not None and leaving[0] <= upto:
                # The context's summary covers turns of the branch left behind.
                dialogue.summary, dialogue.summary_upto_id = "", None
                dialogue.summary_tokens = 0
                Dialogue.objects.filter(pk=dialogue.pk).update(
                    summary="", summary_upto_id=None, summary_tokens=0
                )
    return state_event(dialogue)


async def branch_show(
    *,
    user: Any,
    dialogue_id: Any,
    message_id: Any,
    subscribe: Callable[[int], Awaitable[None]],
) -> None:
    """`branch.switch`: switch, then send the new state to every socket of the
    dialogue (this one included, subscribed first), on every process and device."""
    event = await db_async(branch_switch)(
        user=user, dialogue_id=dialogue_id, message_id=message_id
    )
    dialogue_pk = event["dialogue"]["id"]
    await subscribe(dialogue_pk)
    await realtime.broadcast(dialogue_pk, event)
