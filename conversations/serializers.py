"""Protocol objects (protocol.md "Objects") built from models: JSON primitives only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse

from attachments.serializers import attachment_dict

from .models import Dialogue, Message


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
    """`images` and `attachments` may be passed when already loaded; else the
    prefetch cache is used (nothing is queried here)."""
    cache = getattr(message, "_prefetched_objects_cache", {})
    if images is None:
        images = list(cache["images"]) if "images" in cache else []
    if attachments is None:
        attachments = list(cache["attachments"]) if "attachments" in cache else []
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
