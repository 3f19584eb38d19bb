"""Share links: a read-only snapshot of a dialogue up to a chosen message.

The link's token is the only secret (24 URL-safe characters, 144 bits). The snapshot
is the ids of the messages on the path to the chosen one, fixed when the link is
made; the page (conversations/share_views.py) shows those messages and their images,
nothing else of the dialogue or of the user.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from ..exceptions import BadRequest, MessageNotFound
from ..models import Dialogue, Message, Share
from ..serializers import iso

TOKEN_BYTES = 18
MAX_ACTIVE_PER_DIALOGUE = 50


def _path_ids(*, dialogue: Dialogue, upto: Message) -> list[int]:
    """The ids of the branch that leads to `upto`, first turn first: its ancestors
    (one query for the dialogue's (id, parent) pairs), then it."""
    parent_of = dict(
        Message.objects.filter(dialogue=dialogue, id__lt=upto.pk).values_list(
            "id", "parent_id"
        )
    )
    linked = any(parent is not None for parent in parent_of.values())
    if upto.parent_id is None and parent_of and not linked:
        # Messages from before the tree, never linked: the turns shown before it.
        return [
            *Message.objects.filter(dialogue=dialogue, id__lt=upto.pk, replaced=False)
            .order_by("id")
            .values_list("id", flat=True),
            upto.pk,
        ]
    path = [upto.pk]
    node = upto.parent_id
    while node is not None:
        path.append(node)
        node = parent_of.get(node)
    return path[::-1]


def share_create(
    *, user: Any, dialogue: Dialogue, message_id: int | None = None
) -> Share:
    """A new link to `dialogue` (the caller checked it is the user's) up to
    `message_id`, or up to its newest finished message when None."""
    messages = Message.objects.filter(dialogue=dialogue)
    if message_id is None:
        upto = (
            messages.filter(replaced=False)
            .exclude(status=Message.Status.STREAMING)
            .order_by("-id")
            .first()
        )
        if upto is None:
            raise BadRequest("There is nothing to share in this dialogue yet.")
    else:
        if not isinstance(message_id, int) or isinstance(message_id, bool):
            raise BadRequest(
                "message must be a message id.", fields={"message": "invalid"}
            )
        upto = messages.filter(pk=message_id).first()
        if upto is None:
            raise MessageNotFound()
        if upto.status == Message.Status.STREAMING:
            raise BadRequest(
                "This reply is still being written; share it once it is finished.",
                fields={"message": "streaming"},
            )
    active = Share.objects.filter(dialogue=dialogue, revoked_at__isnull=True).count()
    if active >= MAX_ACTIVE_PER_DIALOGUE:
        raise BadRequest(
            f"This dialogue already has {MAX_ACTIVE_PER_DIALOGUE} links; revoke one first."
        )
    return Share.objects.create(
        token=secrets.token_urlsafe(TOKEN_BYTES),
        dialogue=dialogue,
        owner=user,
        upto_message=upto,
        title=dialogue.title,
        message_ids=_path_ids(dialogue=dialogue, upto=upto),
    )


def share_revoke(*, share: Share) -> Share:
    """The link answers 404 from now on; revoking twice changes nothing."""
    if share.revoked_at is None:
        share.revoked_at = timezone.now()
        share.save(update_fields=["revoked_at", "updated_at"])
    return share


def shares_revoke(*, shares: Iterable[Share]) -> int:
    """Revoke several links at once (the admin's action); returns how many changed."""
    ids = [s.pk for s in shares]
    with transaction.atomic():
        return Share.objects.filter(pk__in=ids, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), updated_at=timezone.now()
        )


def share_dict(share: Share) -> dict[str, Any]:
    return {
        "id": share.pk,
        "url": reverse("share", args=[share.token]),
        "dialogue": share.dialogue_id,
        "message": share.upto_message_id,
        "title": share.title,
        "messages": len(share.message_ids),
        "created_at": iso(share.created_at),
        "revoked_at": iso(share.revoked_at),
    }
