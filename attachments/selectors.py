"""Reads of attachments. Anything a user reaches is scoped to that user."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Prefetch, QuerySet

from .exceptions import AttachmentNotFound
from .models import Attachment

REVIEW_PERM = "conversations.review_dialogue"


def attachment_get_for_viewer(
    *, attachment_id: int, user: Any
) -> tuple[Attachment, bool]:
    """(the attachment, whether it is seen as a reviewer rather than its owner).

    The owner sees it; so does active staff with the review permission once it was
    sent in a dialogue (such access is audited by the caller). Anyone else, an
    anonymous visitor included, gets AttachmentNotFound, as for a missing one.
    """
    if not getattr(user, "is_authenticated", False):
        raise AttachmentNotFound()
    row = (
        Attachment.objects.defer("text")
        .select_related("message__dialogue")
        .filter(pk=attachment_id)
        .first()
    )
    if row is None:
        raise AttachmentNotFound()
    if row.owner_id == user.pk:
        return row, False
    if (
        row.message is not None
        and user.is_active
        and user.is_staff
        and user.has_perm(REVIEW_PERM)
    ):
        return row, True
    raise AttachmentNotFound()


def attachments_of_user(*, user: Any, ids: Iterable[int]) -> list[Attachment]:
    return list(
        Attachment.objects.defer("text")
        .select_related("message")
        .filter(owner=user, pk__in=list(ids))
    )


def attachments_for_messages(
    *, message_ids: Iterable[int]
) -> dict[int, list[Attachment]]:
    """Attachments (without their text) by message id, each list in upload order."""
    found: dict[int, list[Attachment]] = {}
    ids = message_ids if isinstance(message_ids, QuerySet) else list(message_ids)
    rows = Attachment.objects.defer("text").filter(message_id__in=ids)
    for row in rows.order_by("position", "id"):
        found.setdefault(row.message_id, []).append(row)  # type: ignore[arg-type]
    return found


def attachment_texts(*, ids: Iterable[int]) -> dict[int, str]:
    return dict(Attachment.objects.filter(pk__in=list(ids)).values_list("id", "text"))


def attachment_keys_for_dialogue(*, dialogue: Any) -> list[str]:
    return sorted(
        set(
            Attachment.objects.filter(message__dialogue=dialogue).values_list(
                "storage_key", flat=True
            )
        )
    )


def attachments_prefetch() -> Prefetch:
    """`prefetch_related` of a message's attachments, without document text."""
    return Prefetch("attachments", queryset=Attachment.objects.defer("text"))
