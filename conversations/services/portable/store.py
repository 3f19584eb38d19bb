"""Writing an imported dialogue: one dialogue, its messages in a few bulk statements,
their image files. Runs inside the caller's transaction (one per file)."""

from __future__ import annotations

from typing import Any

from attachments.exceptions import AttachmentRefused
from attachments.services import attachment_import
from imaging.models import GeneratedImage
from imaging.services import image_file_store

from ...models import Dialogue, Message
from .model import PortableDialogue

BATCH = 1000


def dialogue_store(
    *, user: Any, portable: PortableDialogue, saved_keys: list[str]
) -> Dialogue:
    """Create the dialogue; image files written are appended to `saved_keys` so the
    caller can remove them if the transaction is rolled back."""
    dialogue = Dialogue.objects.create(
        owner=user,
        title=portable.title,
        title_set_by_user=portable.title_set_by_user,
        model=portable.model,
        system_prompt=portable.system_prompt,
        pinned=portable.pinned,
        imported_from=portable.imported_from,
    )
    # auto_now(_add) fields take the file's times through UPDATE, which skips them.
    Dialogue.objects.filter(pk=dialogue.pk).update(
        created_at=portable.created_at,
        updated_at=portable.updated_at,
        last_activity_at=portable.last_activity_at,
    )
    dialogue.created_at = portable.created_at
    dialogue.updated_at = portable.updated_at
    dialogue.last_activity_at = portable.last_activity_at

    rows = [
        Message(
            dialogue=dialogue,
            user=user,
            role=m.role,
            content=m.content,
            status=m.status,
            model=m.model,
            seq=m.seq,
            prompt_tokens=m.prompt_tokens,
            completion_tokens=m.completion_tokens,
            usage_estimated=m.usage_estimated,
            cut_off=m.cut_off,
            error_code=m.error_code,
            error_message=m.error_message,
            replaced=m.replaced,
        )
        for m in portable.messages
    ]
    # In file order (parents first), so ids grow from a parent to its children.
    Message.objects.bulk_create(rows, batch_size=BATCH)
    by_key = {m.key: row for m, row in zip(portable.messages, rows, strict=True)}
    for m, row in zip(portable.messages, rows, strict=True):
        row.parent_id = by_key[m.parent].pk if m.parent is not None else None
        row.created_at = row.updated_at = m.created_at
    Message.objects.bulk_update(
        rows, ["parent", "created_at", "updated_at"], batch_size=BATCH
    )

    images = []
    for m, row in zip(portable.messages, rows, strict=True):
        for image in m.images:
            key = ""
            if image.data is not None:
                key = image_file_store(data=image.data, content_type=image.content_type)
                saved_keys.append(key)
            images.append(
                GeneratedImage(
                    message=row,
                    prompt=image.prompt,
                    revised_prompt=image.revised_prompt,
                    model=image.model,
                    size=image.size,
                    width=image.width,
                    height=image.height,
                    storage_key=key,
                    content_type=image.content_type,
                    status=image.status,
                    error_code=image.error_code,
                    error_message=image.error_message,
                )
            )
    GeneratedImage.objects.bulk_create(images, batch_size=BATCH)

    for m, row in zip(portable.messages, rows, strict=True):
        for position, attached in enumerate(m.attachments):
            if attached.data is None:
                portable.skipped["attachments without their file"] += 1
                continue
            try:
                _, key = attachment_import(
                    message=row,
                    name=attached.name,
                    data=attached.data,
                    position=position,
                )
            except AttachmentRefused as exc:
                portable.skipped[f"attachments refused ({exc.message})"] += 1
                continue
            saved_keys.append(key)
    return dialogue
