"""The protocol's Attachment object (docs/protocol.md): JSON primitives only."""

from __future__ import annotations

from typing import Any

from django.urls import reverse


def attachment_dict(attachment: Any) -> dict[str, Any]:
    return {
        "id": attachment.pk,
        "url": reverse("attachment-file", args=[attachment.pk]),
        "name": attachment.name,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "kind": attachment.kind,
        "width": attachment.width,
        "height": attachment.height,
    }
