"""How messages stored before the message tree get their parents: shared by the
migration that built the tree (0004) and the reader of v1 export files."""

from __future__ import annotations


def linear_parents(
    rows: list[tuple[int, str, bool]],
) -> dict[int, int | None]:
    """Parents of one dialogue's messages from their order and replaced flags.

    `rows` are (id, role, replaced) in id order. Before the tree, a send appended a
    user message and its reply to the shown turns, an edit first marked the edited
    user message and everything after it replaced, a regenerate the replies after
    the last user message; no later event changed the flag of an older message. So
    a reply answers the nearest user message before it, and a user message follows
    the message before it unless that one is replaced: then it was an edit, and the
    new message is a sibling of the last user message before it.
    """
    parents: dict[int, int | None] = {}
    previous = None
    last_user = None
    for pk, role, replaced in rows:
        if role == "assistant":
            parents[pk] = last_user[0] if last_user else None
        elif previous is None:
            parents[pk] = None
        elif not previous[2]:
            parents[pk] = previous[0]
        else:
            parents[pk] = parents.get(last_user[0]) if last_user else None
        if role == "user":
            last_user = (pk, role, replaced)
        previous = (pk, role, replaced)
    return parents
