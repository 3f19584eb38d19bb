"""Exports of whole dialogues: the owner's Markdown and JSON, and the staff's JSON and
CSV (the admin's actions).

Messages are read in one ordered pass, in chunks, with their images prefetched per
chunk: a bounded number of queries whatever the size. For the staff exports callers
check the review permission and audit the access (services.review).

The Markdown export must read well away from the site, where `/images/<id>/` means
nothing (it needs the owner's session). A dialogue with pictures is therefore a zip:
the Markdown plus `images/<id>.png`, linked by relative paths, which every Markdown
viewer shows (editors, GitHub, pandoc, Obsidian). Embedding them as `data:` URIs
was the alternative: one file, but each picture grows by a third into a line of
megabytes of base64 that makes the text unreadable to edit, and several viewers
(GitHub among them) do not show `data:` images at all.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import posixpath
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from django.core.files.storage import default_storage
from django.urls import NoReverseMatch, reverse

from attachments.selectors import attachments_prefetch

from ..models import Dialogue, Message
from ..serializers import (
    attachments_of,
    dialogue_dict,
    images_of,
    iso,
    message_dict,
    with_attachments,
    with_images,
)

log = logging.getLogger(__name__)

CHUNK = 2000
OWNER_EXPORT_CHUNK = 500
# A zip bigger than this is spooled to a temporary file instead of memory.
SPOOL_BYTES = 8 * 1024 * 1024
CSV_COLUMNS = [
    "dialogue_id",
    "dialogue_title",
    "owner",
    "message_id",
    "created_at",
    "role",
    "status",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "replaced",
    "flagged",
    "images",
    "attachments",
    "content",
]
# Spreadsheets run cells starting with these as formulas (CSV injection).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _dialogues(dialogues: Iterable[Dialogue]) -> list[Dialogue]:
    ids = [d.pk for d in dialogues]
    return list(
        Dialogue.objects.filter(pk__in=ids).select_related("owner").order_by("id")
    )


def _messages(dialogue_ids: list[int]) -> Iterator[Message]:
    return (
        Message.objects.filter(dialogue_id__in=dialogue_ids)
        .order_by("dialogue_id", "id")
        .prefetch_related(with_images(), with_attachments())
        .iterator(chunk_size=CHUNK)
    )


def dialogues_export_json(*, dialogues: Iterable[Dialogue]) -> bytes:
    """{"exported_at", "dialogues": [dialogue + owner + flagged + messages]}."""
    rows = _dialogues(dialogues)
    by_id: dict[int, dict[str, Any]] = {}
    for d in rows:
        by_id[d.pk] = {
            **dialogue_dict(d),
            "owner": {"id": d.owner_id, "username": d.owner.get_username()},
            "flagged": d.flagged,
            "messages": [],
        }
    for m in _messages(list(by_id)):
        by_id[m.dialogue_id]["messages"].append(
            {**message_dict(m), "flagged": m.flagged}
        )
    payload = {
        "exported_at": iso(datetime.now(UTC)),
        "dialogues": list(by_id.values()),
    }
    return json.dumps(payload, ensure_ascii=False, indent=1).encode()


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def dialogues_export_csv(*, dialogues: Iterable[Dialogue]) -> bytes:
    """One row per message (CSV_COLUMNS), UTF-8 with a BOM so spreadsheets read it."""
    rows = {d.pk: d for d in _dialogues(dialogues)}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for m in _messages(list(rows)):
        d = rows[m.dialogue_id]
        images = " ".join(str(i.pk) for i in images_of(m))
        attachments = " ".join(a.name for a in attachments_of(m))
        writer.writerow(
            [
                _cell(v)
                for v in (
                    d.pk,
                    d.title,
                    d.owner.get_username(),
                    m.pk,
                    iso(m.created_at),
                    m.role,
                    m.status,
                    m.model,
                    "" if m.prompt_tokens is None else m.prompt_tokens,
                    "" if m.completion_tokens is None else m.completion_tokens,
                    int(m.replaced),
                    int(m.flagged),
                    images,
                    attachments,
                    m.content,
                )
            ]
        )
    return ("\ufeff" + out.getvalue()).encode()


# --- The owner's exports (the chat page's download links) ---------------------------


def _image_url(image: Any) -> str | None:
    if not image.storage_key:
        return None
    try:
        return reverse("image-file", args=[image.pk])
    except NoReverseMatch:  # imaging's URLs not installed
        return f"/images/{image.pk}/"


def _attachment_link(attachment: Any) -> str:
    """A picture inline, a document as a link, both to the access-checked view (the
    files stay private: a bundle does not carry them)."""
    url = reverse("attachment-file", args=[attachment.pk])
    name = " ".join(attachment.name.split()).replace("]", ")").replace("[", "(")
    if attachment.kind == "image":
        return f"![{name}]({url})"
    return f"📎 [{name}]({url}) ({attachment.content_type}, {attachment.size} bytes)"


def _export_messages(dialogue: Dialogue) -> Any:
    return (
        Message.objects.filter(dialogue_id=dialogue.pk)
        .order_by("id")
        .prefetch_related("images", attachments_prefetch())
        .iterator(chunk_size=OWNER_EXPORT_CHUNK)
    )


def _fence_safe(text: str) -> str:
    """`text` ending in a newline, with a code fence it leaves open closed, so one
    message cannot swallow the rest of the export."""
    text = text if text.endswith("\n") else text + "\n"
    fences = [
        ln.lstrip()[:3]
        for ln in text.splitlines()
        if ln.lstrip().startswith(("```", "~~~"))
    ]
    if len(fences) % 2:
        text += fences[-1] + "\n"
    return text


def dialogue_export_markdown(
    *, dialogue: Dialogue, image_paths: dict[int, str] | None = None
) -> str:
    """The whole dialogue as Markdown: settings, then every message (replaced and
    failed ones too, labelled) with its images. An image links to its path in
    `image_paths` (the files of a bundle); without one, to the site's image view."""
    out = [f"# {dialogue.title or 'Untitled conversation'}", ""]
    out += [
        f"- Model: {dialogue.model or 'default'}",
        f"- Created: {iso(dialogue.created_at)}",
        f"- Last activity: {iso(dialogue.last_activity_at)}",
        f"- Exported: {datetime.now(UTC).isoformat()}",
        "",
    ]
    if dialogue.system_prompt:
        out += ["## System prompt", "", _fence_safe(dialogue.system_prompt)]
    out += ["## Messages", ""]
    for message in _export_messages(dialogue):
        label = "User" if message.role == Message.Role.USER else "Assistant"
        notes = [iso(message.created_at) or ""]
        if message.model and message.role == Message.Role.ASSISTANT:
            notes.append(message.model)
        if message.status != Message.Status.COMPLETE:
            notes.append(message.status)
        if message.replaced:
            notes.append("replaced")
        out += [f"### {label} · {' · '.join(n for n in notes if n)}", ""]
        if message.content:
            out += [_fence_safe(message.content)]
        for attachment in message.attachments.all():
            out += [_attachment_link(attachment), ""]
        for image in message.images.all():
            url = (
                image_paths.get(image.pk)
                if image_paths is not None
                else _image_url(image)
            )
            alt = " ".join((image.revised_prompt or image.prompt).split()).replace(
                "]", ")"
            )
            if url:
                out += [f"![{alt}]({url})", ""]
            else:
                out += [f"*Image not available ({image.status}): {alt}*", ""]
        if message.error_code:
            out += [f"> Error ({message.error_code}): {message.error_message}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def dialogue_export_json(*, dialogue: Dialogue) -> str:
    """The whole dialogue, every branch, as a file `dialogues_import` reads back
    exactly (services/portable: format `chatsite.dialogue.v2`)."""
    from .portable import dialogue_export_portable

    return dialogue_export_portable(dialogue=dialogue)


@dataclass
class ExportFile:
    body: IO[bytes]
    content_type: str
    filename: str


def _read_images(dialogue: Dialogue) -> Iterator[tuple[int, str, bytes]]:
    """(image id, path in the bundle, bytes) of every stored picture of `dialogue`;
    a file the storage cannot read is left out (the Markdown then says so)."""
    from imaging.models import GeneratedImage

    images = GeneratedImage.objects.filter(message__dialogue=dialogue).exclude(
        storage_key=""
    )
    for image in images.order_by("id").only("id", "storage_key").iterator():
        ext = posixpath.splitext(image.storage_key)[1].lower() or ".png"
        try:
            with default_storage.open(image.storage_key, "rb") as handle:
                data = handle.read()
        except Exception:  # a missing file must not cost the whole export
            log.warning("export: image %s unreadable", image.pk, exc_info=True)
            continue
        yield image.pk, f"images/{image.pk}{ext}", data


def dialogue_export_markdown_file(*, dialogue: Dialogue) -> ExportFile:
    """The owner's Markdown download: `dialogue-<id>.md`, or, when the dialogue has
    pictures, `dialogue-<id>.zip` holding `dialogue-<id>/dialogue.md` and its
    `images/` that the Markdown links to relatively."""
    name = f"dialogue-{dialogue.pk}"
    images = _read_images(dialogue)
    first = next(images, None)
    if first is None:
        text = dialogue_export_markdown(dialogue=dialogue, image_paths={})
        return ExportFile(
            io.BytesIO(text.encode()), "text/markdown; charset=utf-8", f"{name}.md"
        )
    out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned open
    paths: dict[int, str] = {}
    with zipfile.ZipFile(out, "w") as bundle:
        for pk, path, data in itertools.chain([first], images):
            # Pictures are compressed already; deflating them again wastes CPU.
            bundle.writestr(f"{name}/{path}", data, compress_type=zipfile.ZIP_STORED)
            paths[pk] = path
        text = dialogue_export_markdown(dialogue=dialogue, image_paths=paths)
        bundle.writestr(
            f"{name}/dialogue.md", text.encode(), compress_type=zipfile.ZIP_DEFLATED
        )
    out.seek(0)
    return ExportFile(out, "application/zip", f"{name}.zip")
