"""chatsite's own dialogue file: the export, and reading it back.

Format `chatsite.dialogue.v2` holds nothing that depends on this database: message
ids are positions in the file (a parent comes before its children), images and
attachments carry their bytes (base64) and there is no export time. So exporting a
dialogue, importing the file and exporting the copy gives the same bytes. v1 files (database ids, no
tree, no image bytes) are read too: the tree is rebuilt from their order and
replaced flags, their images are skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from django.core.files.storage import default_storage

from attachments.selectors import attachments_prefetch

from ...models import Dialogue, Message
from ...serializers import iso
from ...tree_rule import linear_parents
from .model import (
    ImportFileInvalid,
    Parsed,
    PortableAttachment,
    PortableDialogue,
    PortableImage,
    PortableMessage,
)

FORMAT = "chatsite.dialogue.v2"
FORMAT_V1 = "chatsite.dialogue.v1"
EXPORT_CHUNK = 500
ROLES = {c.value for c in Message.Role}
STATUSES = {c.value for c in Message.Status}


# --- Export ----------------------------------------------------------------------------


def _image_bytes(key: str) -> str | None:
    if not key:
        return None
    try:
        with default_storage.open(key, "rb") as handle:
            return base64.b64encode(handle.read()).decode("ascii")
    except (FileNotFoundError, OSError):
        return None


def _image_out(image: Any) -> dict[str, Any]:
    return {
        "prompt": image.prompt,
        "revised_prompt": image.revised_prompt,
        "status": image.status,
        "model": image.model,
        "size": image.size,
        "width": image.width,
        "height": image.height,
        "content_type": image.content_type,
        "error": (
            {"code": image.error_code, "message": image.error_message}
            if image.error_code
            else None
        ),
        "data": _image_bytes(image.storage_key),
    }


def dialogue_export_portable(*, dialogue: Dialogue) -> str:
    """The dialogue as a `chatsite.dialogue.v2` file, every branch included."""
    local: dict[int, int] = {}
    messages = []
    rows = (
        Message.objects.filter(dialogue_id=dialogue.pk)
        .order_by("id")
        .prefetch_related("images", attachments_prefetch())
        .iterator(chunk_size=EXPORT_CHUNK)
    )
    for n, m in enumerate(rows, 1):
        local[m.pk] = n
        usage = None
        if m.prompt_tokens is not None or m.completion_tokens is not None:
            usage = {
                "prompt_tokens": m.prompt_tokens,
                "completion_tokens": m.completion_tokens,
                "estimated": m.usage_estimated,
            }
        messages.append(
            {
                "id": n,
                "parent": local.get(m.parent_id) if m.parent_id else None,
                "role": m.role,
                "content": m.content,
                "status": m.status,
                "model": m.model,
                "created_at": iso(m.created_at),
                "seq": m.seq,
                "usage": usage,
                "error": (
                    {"code": m.error_code, "message": m.error_message}
                    if m.error_code
                    else None
                ),
                "replaced": m.replaced,
                "cut_off": m.cut_off,
                "images": [_image_out(i) for i in m.images.all()],
                # What was attached, with its bytes: an import checks them again
                # like an upload and derives the rest.
                "attachments": [
                    {
                        "name": a.name,
                        "kind": a.kind,
                        "content_type": a.content_type,
                        "size": a.size,
                        "width": a.width,
                        "height": a.height,
                        "data": _image_bytes(a.storage_key),
                    }
                    for a in m.attachments.all()
                ],
            }
        )
    data = {
        "format": FORMAT,
        "dialogue": {
            "title": dialogue.title,
            "model": dialogue.model,
            "system_prompt": dialogue.system_prompt,
            "pinned": dialogue.pinned,
            "title_set_by_user": dialogue.title_set_by_user,
            "created_at": iso(dialogue.created_at),
            "updated_at": iso(dialogue.updated_at),
            "last_activity_at": iso(dialogue.last_activity_at),
        },
        "messages": messages,
    }
    return json.dumps(data, ensure_ascii=False, indent=2)


# --- Import ----------------------------------------------------------------------------


class _Reader:
    """Typed access to a JSON object, failing with where and what went wrong."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ImportFileInvalid(f"{where} is not a JSON object.")
        self.obj = obj
        self.where = where

    def _fail(self, name: str, expected: str) -> ImportFileInvalid:
        return ImportFileInvalid(f"{self.where}: “{name}” must be {expected}.")

    def text(self, name: str, default: str | None = None, limit: int = 0) -> str:
        value = self.obj.get(name, default)
        if value is None and default is not None:
            value = default
        if not isinstance(value, str):
            raise self._fail(name, "text")
        return value[:limit] if limit else value

    def flag(self, name: str, default: bool | None = None) -> bool:
        value = self.obj.get(name, default)
        if not isinstance(value, bool):
            raise self._fail(name, "true or false")
        return value

    def number(self, name: str, *, optional: bool = True) -> int | None:
        value = self.obj.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self._fail(name, "a whole number")
        return value

    def moment(self, name: str) -> datetime:
        value = self.obj.get(name)
        try:
            moment = datetime.fromisoformat(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise self._fail(name, "a date and time (ISO 8601)") from None
        if moment.tzinfo is None:
            raise self._fail(name, "a date and time with its UTC offset")
        return moment

    def choice(self, name: str, choices: set[str]) -> str:
        value = self.obj.get(name)
        if value not in choices:
            raise self._fail(name, "one of " + ", ".join(sorted(choices)))
        return value

    def error(self) -> tuple[str, str]:
        value = self.obj.get("error")
        if value is None:
            return "", ""
        error = _Reader(value, f"{self.where} error")
        return error.text("code", limit=40), error.text("message", "")

    def items(self, name: str) -> list[Any]:
        value = self.obj.get(name, [])
        if not isinstance(value, list):
            raise self._fail(name, "a list")
        return value


def _data_in(obj: dict[str, Any], where: str) -> bytes | None:
    """The file's bytes from its optional base64 `data` field."""
    data = obj.get("data")
    if data is None:
        return None
    if not isinstance(data, str):
        raise ImportFileInvalid(f"{where}: “data” must be base64 text.")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImportFileInvalid(f"{where}: “data” is not valid base64.") from None


def _attachment_in(obj: Any, where: str) -> PortableAttachment:
    r = _Reader(obj, where)
    raw = _data_in(r.obj, where)
    return PortableAttachment(name=r.text("name", "file", limit=200), data=raw)


def _image_in(obj: Any, where: str) -> PortableImage:
    r = _Reader(obj, where)
    code, message = r.error()
    raw = _data_in(r.obj, where)
    content_type = r.text("content_type", "image/png")
    if raw is not None and content_type not in {
        "image/png",
        "image/jpeg",
        "image/webp",
    }:
        raise ImportFileInvalid(f"{where}: images must be PNG, JPEG or WebP.")
    return PortableImage(
        prompt=r.text("prompt", ""),
        revised_prompt=r.text("revised_prompt", ""),
        status=r.choice("status", {"pending", "complete", "failed"}),
        model=r.text("model", "", limit=100),
        size=r.text("size", "", limit=20),
        width=r.number("width"),
        height=r.number("height"),
        content_type=content_type,
        error_code=code,
        error_message=message,
        data=raw,
    )


def _check_active_path(messages: list[PortableMessage], where: str) -> None:
    """The messages not replaced must be one branch: each one's parent is shown too
    and no two of them share a parent."""
    by_key = {m.key: m for m in messages}
    seen_parents: set[str | None] = set()
    for m in messages:
        if m.replaced:
            continue
        if m.parent is not None and by_key[m.parent].replaced:
            raise ImportFileInvalid(
                f"{where}: message {m.key} is shown but its parent is replaced."
            )
        if m.parent in seen_parents:
            raise ImportFileInvalid(
                f"{where}: two messages shown answer the same message {m.parent}."
            )
        seen_parents.add(m.parent)


def parse_chatsite(data: dict[str, Any]) -> Parsed:
    fmt = data.get("format")
    where = "The file"
    top = _Reader(data, where)
    d = _Reader(data.get("dialogue"), "The dialogue")
    skipped: list[dict[str, str]] = []
    dialogue = PortableDialogue(
        title=" ".join(d.text("title", "").split())[:200],
        model=d.text("model", "", limit=100),
        system_prompt=d.text("system_prompt", ""),
        pinned=d.flag("pinned", False),
        title_set_by_user=d.flag("title_set_by_user", False),
        created_at=d.moment("created_at"),
        updated_at=d.moment("updated_at"),
        last_activity_at=d.moment("last_activity_at")
        if "last_activity_at" in d.obj
        else d.moment("updated_at"),
    )
    raw = top.items("messages")
    keys: set[str] = set()
    v1_rows: list[tuple[Any, str, bool]] = []
    for i, obj in enumerate(raw, 1):
        r = _Reader(obj, f"Message {i}")
        pk = r.number("id", optional=False)
        key = str(pk)
        if key in keys:
            raise ImportFileInvalid(f"Message {i}: the id {pk} is used twice.")
        parent = None
        if fmt == FORMAT:
            parent_id = r.number("parent")
            if parent_id is not None:
                parent = str(parent_id)
                if parent not in keys:
                    raise ImportFileInvalid(
                        f"Message {i}: its parent {parent_id} is not an earlier message."
                    )
        keys.add(key)
        code, message = r.error()
        usage = r.obj.get("usage")
        u = _Reader(usage, f"Message {i} usage") if usage is not None else None
        status = r.choice("status", STATUSES)
        if status == Message.Status.STREAMING:
            status = Message.Status.INTERRUPTED  # nothing is writing it here
        role = r.choice("role", ROLES)
        seq = r.obj.get("seq")
        images: list[PortableImage] = []
        for j, image in enumerate(r.items("images"), 1):
            if fmt == FORMAT:
                images.append(_image_in(image, f"Message {i} image {j}"))
            else:
                dialogue.skipped["images (v1 files carry no image files)"] += 1
        attachments = [
            _attachment_in(a, f"Message {i} attachment {j}")
            for j, a in enumerate(r.items("attachments"), 1)
        ]
        replaced = r.flag("replaced", False)
        dialogue.messages.append(
            PortableMessage(
                key=key,
                parent=parent,
                role=role,
                content=r.text("content", ""),
                status=status,
                model=r.text("model", "", limit=100),
                created_at=r.moment("created_at"),
                seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else 0,
                prompt_tokens=u.number("prompt_tokens") if u else None,
                completion_tokens=u.number("completion_tokens") if u else None,
                usage_estimated=u.flag("estimated", False) if u else False,
                cut_off=r.flag("cut_off", False),
                error_code=code,
                error_message=message,
                replaced=replaced,
                images=images,
                attachments=attachments,
            )
        )
        v1_rows.append((pk, role, replaced))
    if fmt == FORMAT_V1:
        if [pk for pk, _, _ in v1_rows] != sorted(pk for pk, _, _ in v1_rows):
            raise ImportFileInvalid("The messages of a v1 file must be in id order.")
        parents = linear_parents(v1_rows)
        for m in dialogue.messages:
            parent_id = parents[int(m.key)]
            m.parent = None if parent_id is None else str(parent_id)
    _check_active_path(dialogue.messages, "The messages")
    if not dialogue.messages:
        skipped.append({"title": dialogue.title, "reason": "it has no messages"})
        return Parsed(format="chatsite", dialogues=[], skipped=skipped)
    return Parsed(format="chatsite", dialogues=[dialogue], skipped=skipped)
