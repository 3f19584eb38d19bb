"""Protocol objects (protocol.md "Objects") built from models: JSON primitives only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Prefetch
from django.urls import reverse

from attachments.models import Attachment
from attachments.serializers import attachment_dict

from .models import Dialogue, Message

# `message_dict` lists a message's pictures from this attribute, filled by the
# `with_images()` prefetch (one query for a page of messages).
IMAGES = "prefetched_images"


def with_images() -> Prefetch:
    return Prefetch("images", to_attr=IMAGES)


def images_of(message: Message) -> list[Any]:
    """The message's pictures as prefetched by `with_images()` (none without it)."""
    images: list[Any] = getattr(message, IMAGES, [])
    return images


# ... and its attachments (without their document text) from this one.
ATTACHMENTS = "prefetched_attachments"


def with_attachments() -> Prefetch:
    return Prefetch(
        "attachments", queryset=Attachment.objects.defer("text"), to_attr=ATTACHMENTS
    )


def attachments_of(message: Message) -> list[Any]:
    """The message's attachments as prefetched by `with_attachments()`."""
    attachments: list[Any] = getattr(message, ATTACHMENTS, [])
    return attachments


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def dialogue_dict(dialogue: Dialogue) -> dict[str, Any]:
    return {
        "id": dialogue.pk,
        "title": dialogue.title,
        "model": dialogue.model,
        "system_prompt": dialogue.system_prompt,
        "pinned": dialogue.pinned,
        "title_set_by_user": dialogue.title_set_by_user,
        "created_at": iso(dialogue.created_at),
        "updated_at": iso(dialogue.updated_at),
        "last_activity_at": iso(dialogue.last_activity_at),
    }


def image_dict(image: Any) -> dict[str, Any]:
    return {
        "id": image.pk,
        "url": reverse("image-file", args=[image.pk]) if image.storage_key else None,
        "prompt": image.prompt,
        "revised_prompt": image.revised_prompt or None,
        "status": image.status,
        "width": image.width,
        "height": image.height,
        "error": (
            {"code": image.error_code, "message": image.error_message}
            if image.error_code
            else None
        ),
    }


def message_dict(
    message: Message,
    *,
    images: list[Any] | None = None,
    attachments: list[Any] | None = None,
) -> dict[str, Any]:
    """`images` and `attachments` may be passed when already loaded; else those of
    the `with_images()` and `with_attachments()` prefetches (nothing is queried here:
    none without them)."""
    if images is None:
        images = images_of(message)
    if attachments is None:
        attachments = attachments_of(message)
    usage = None
    if message.prompt_tokens is not None or message.completion_tokens is not None:
        usage = {
            "prompt_tokens": message.prompt_tokens or 0,
            "completion_tokens": message.completion_tokens or 0,
            # counted by us: the model server did not report usage
            "estimated": message.usage_estimated,
        }
    data = {
        "id": message.pk,
        "dialogue": message.dialogue_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "model": message.model or None,
        "created_at": iso(message.created_at),
        "client_id": message.client_id if message.role == Message.Role.USER else None,
        "seq": message.seq if message.role == Message.Role.ASSISTANT else None,
        "images": [image_dict(i) for i in images],
        "attachments": [attachment_dict(a) for a in attachments],
        "usage": usage,
        "error": (
            {"code": message.error_code, "message": message.error_message}
            if message.error_code
            else None
        ),
        "replaced": message.replaced,
        "parent": message.parent_id,
        # ended at its token limit: the text is kept, Continue goes on from there
        "cut_off": message.cut_off,
    }
    siblings = getattr(message, "siblings", None)
    if siblings is not None:  # read with the page (selectors.message_siblings)
        data["siblings"] = siblings
    return data
