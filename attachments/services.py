"""Attachment use cases: upload, attach to a message at send, discard, delete files.

Files live in the default storage under generated keys (never derived from the
user's file name); rows keep the key. Deleting a dialogue deletes its attachment
rows (cascade) and, once that commits, their files.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import IO, Any
from uuid import uuid4

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from . import selectors
from .exceptions import AttachmentNotFound, AttachmentRefused
from .intake import Intake, inspect_upload
from .models import Attachment
from .quota import human_size, upload_quota_refund, upload_quota_reserve

logger = logging.getLogger(__name__)


# --- Storage -------------------------------------------------------------------------


def _new_key(intake: Intake, now: datetime) -> str:
    return f"attachments/{now:%Y/%m}/{uuid4().hex}.{intake.extension}"


def _delete_quietly(key: str) -> bool:
    try:
        default_storage.delete(key)
    except Exception:
        logger.exception("could not delete attachment file %s", key)
        return False
    return True


def _store(intake: Intake, file: IO[bytes], now: datetime) -> tuple[str, int]:
    key = _new_key(intake, now)
    if intake.data is not None:
        content: File = ContentFile(intake.data)
        size = len(intake.data)
    else:
        file.seek(0)
        content = File(file)  # copied in chunks, never read whole
        size = content.size
    try:
        return default_storage.save(key, content), size
    except Exception as exc:
        logger.exception("could not store attachment file %s", key)
        _delete_quietly(key)
        raise AttachmentRefused(
            "storage_error", "The file could not be stored. Please try again."
        ) from exc


# --- Use cases -------------------------------------------------------------------------


def attachment_upload(
    *, user: Any, file: IO[bytes], name: str, size: int, now: datetime | None = None
) -> Attachment:
    """Check an uploaded file by its content, store it and return its (unsent) row.

    `file` is the upload's temporary file (seekable, on disk); `size` its length.
    Raises AttachmentRefused: empty, too_large, unsupported_type, type_mismatch,
    quota_exceeded or storage_error.
    """
    now = now or timezone.now()
    limit = settings.ATTACHMENT_MAX_FILE_BYTES
    if size > limit:
        raise AttachmentRefused(
            "too_large",
            f"The file is {human_size(size)}; files of up to {human_size(limit)} "
            "are accepted.",
        )
    intake = inspect_upload(file=file, name=name)
    upload_quota_reserve(user=user, size=size, now=now)
    try:
        key, stored = _store(intake, file, now)
    except BaseException:
        upload_quota_refund(user=user, size=size, now=now)
        raise
    try:
        return Attachment.objects.create(
            owner=user,
            kind=intake.kind,
            name=intake.name,
            content_type=intake.content_type,
            size=stored,
            uploaded_bytes=size,
            width=intake.width,
            height=intake.height,
            pages=intake.pages,
            storage_key=key,
            text=intake.text,
            text_truncated=intake.text_truncated,
        )
    except BaseException:
        _delete_quietly(key)
        upload_quota_refund(user=user, size=size, now=now)
        raise


def attachment_import(
    *, message: Any, name: str, data: bytes, position: int
) -> tuple[Attachment, str]:
    """A file brought in with an imported dialogue: checked by its content like an
    upload (AttachmentRefused), stored and given to `message`, in the caller's
    transaction. Returns it and its storage key, which the caller removes if that
    transaction is rolled back. Imports do not count against the upload quota."""
    limit = settings.ATTACHMENT_MAX_FILE_BYTES
    if len(data) > limit:
        raise AttachmentRefused(
            "too_large", f"Files of up to {human_size(limit)} are accepted."
        )
    intake = inspect_upload(file=io.BytesIO(data), name=name)
    key, stored = _store(intake, io.BytesIO(data), timezone.now())
    row = Attachment.objects.create(
        owner_id=message.user_id,
        message=message,
        kind=intake.kind,
        name=intake.name,
        content_type=intake.content_type,
        size=stored,
        uploaded_bytes=0,
        width=intake.width,
        height=intake.height,
        pages=intake.pages,
        storage_key=key,
        text=intake.text,
        text_truncated=intake.text_truncated,
        position=position,
    )
    return row, key


def attachment_ids_validate(value: Any) -> list[int]:
    """The `attachments` field of a send: a list of distinct ids (possibly empty)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in value
    ):
        raise AttachmentRefused(
            "bad_request", "`attachments` must be a list of attachment ids."
        )
    if len(set(value)) != len(value):
        raise AttachmentRefused("bad_request", "An attachment is listed twice.")
    limit = settings.ATTACHMENT_MAX_PER_MESSAGE
    if len(value) > limit:
        raise AttachmentRefused(
            "too_large", f"A message may carry at most {limit} attachments."
        )
    return value


def attachments_for_send(
    *, user: Any, ids: Sequence[int], dialogue_id: int | None
) -> list[Attachment]:
    """The attachments a send names, checked: the user's, not yet sent (or already in
    this dialogue, which an edit carries over), within the per-message size limit.
    In the order given."""
    ids = attachment_ids_validate(list(ids))
    if not ids:
        return []
    rows = {a.pk: a for a in selectors.attachments_of_user(user=user, ids=ids)}
    for pk in ids:
        row = rows.get(pk)
        sent_in = row.message.dialogue_id if row and row.message else None
        if row is None or (
            row.message_id is not None
            and (dialogue_id is None or sent_in != dialogue_id)
        ):
            raise AttachmentNotFound(
                "An attachment of this message no longer exists. Remove it and "
                "attach the file again."
            )
    total = sum(rows[pk].size for pk in ids)
    limit = settings.ATTACHMENT_MAX_MESSAGE_BYTES
    if total > limit:
        raise AttachmentRefused(
            "too_large",
            f"The attachments add up to {human_size(total)}; a message may carry "
            f"up to {human_size(limit)}.",
        )
    return [rows[pk] for pk in ids]


def attachments_attach(
    *, message: Any, attachments: Sequence[Attachment]
) -> list[Attachment]:
    """Give `attachments` to the stored `message`, in the caller's transaction.

    Unsent ones move onto it (a race with another send of the same upload loses with
    AttachmentRefused, rolling the caller back); ones already sent in the dialogue
    (an edit keeping its turn's files) are copied, sharing the stored file."""
    if not attachments:
        return []
    unsent = [a for a in attachments if a.message_id is None]
    now = timezone.now()
    for position, attachment in enumerate(attachments):
        attachment.position = position
    for attachment in unsent:
        moved = Attachment.objects.filter(
            pk=attachment.pk, owner_id=message.user_id, message__isnull=True
        ).update(message=message, position=attachment.position, updated_at=now)
        if moved != 1:
            raise AttachmentRefused(
                "bad_request", "An attachment was already sent with another message."
            )
    result: list[Attachment] = []
    copies: list[Attachment] = []
    for attachment in attachments:
        if attachment.message_id is None:
            attachment.message = message
            result.append(attachment)
            continue
        copy = Attachment(
            owner_id=attachment.owner_id,
            message=message,
            kind=attachment.kind,
            name=attachment.name,
            content_type=attachment.content_type,
            size=attachment.size,
            uploaded_bytes=0,
            width=attachment.width,
            height=attachment.height,
            pages=attachment.pages,
            storage_key=attachment.storage_key,
            text_truncated=attachment.text_truncated,
            position=attachment.position,
        )
        copies.append(copy)
        result.append(copy)
    if copies:
        texts = selectors.attachment_texts(
            ids=[a.pk for a in attachments if a.message_id is not None]
        )
        originals = [a for a in attachments if a.message_id is not None]
        for copy, original in zip(copies, originals, strict=True):
            copy.text = texts.get(original.pk, "")
        Attachment.objects.bulk_create(copies)
    return result


def attachment_discard(*, user: Any, attachment_id: int) -> None:
    """Delete an upload the user removed before sending; its file after the commit."""
    with transaction.atomic():
        row = (
            Attachment.objects.select_for_update()
            .filter(pk=attachment_id, owner=user, message__isnull=True)
            .first()
        )
        if row is None:
            raise AttachmentNotFound()
        key = row.storage_key
        row.delete()
        transaction.on_commit(lambda: _delete_quietly(key))


def attachment_delete_files(*, keys: Iterable[str]) -> int:
    return sum(1 for key in keys if key and _delete_quietly(key))


def attachments_delete_for_dialogue(*, dialogue: Any) -> int:
    """Schedule the removal of a dialogue's attachment files for after the commit.

    Call it in the dialogue-delete transaction before deleting the dialogue (whose
    cascade deletes the rows). Returns how many files are scheduled."""
    keys = selectors.attachment_keys_for_dialogue(dialogue=dialogue)
    if keys:
        transaction.on_commit(lambda: attachment_delete_files(keys=keys))
    return len(keys)


def attachments_purge_unsent(
    *, older_than: timedelta, now: datetime | None = None
) -> int:
    """Delete uploads never sent with a message, older than `older_than`."""
    cutoff = (now or timezone.now()) - older_than
    deleted = 0
    while True:
        batch = list(
            Attachment.objects.filter(message__isnull=True, created_at__lt=cutoff)
            .order_by("id")
            .values_list("id", "storage_key")[:500]
        )
        if not batch:
            return deleted
        with transaction.atomic():
            Attachment.objects.filter(
                pk__in=[pk for pk, _ in batch], message__isnull=True
            ).delete()
        attachment_delete_files(keys=[key for _, key in batch])
        deleted += len(batch)


def attachments_check_model(*, attachments: Sequence[Attachment], spec: Any) -> None:
    """Refuse pictures for a model that cannot see them, before anything is stored
    or asked: the user learns it at once, with the models that could."""
    if spec.vision or not any(a.kind == Attachment.Kind.IMAGE for a in attachments):
        return
    from conversations.catalog import chat_models

    able = [m.name for m in chat_models() if m.vision]
    hint = (
        f" Pick a model that can ({', '.join(able)}) or remove the picture."
        if able
        else " Remove the picture, or ask an operator for a vision model."
    )
    raise AttachmentRefused(
        "bad_request", f"The model {spec.name} cannot see pictures.{hint}"
    )


def attachment_ids_of(*, message: Any) -> list[int]:
    return list(
        Attachment.objects.filter(message=message)
        .order_by("position", "id")
        .values_list("id", flat=True)
    )
