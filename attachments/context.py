"""Attachments in what the model sees: document text in delimited blocks counted in
the token budget (cut with a visible note when too long), pictures as OpenAI
`image_url` content parts for a vision model (a data URL, or a presigned URL when the
storage is S3/OSS and ATTACHMENT_PROVIDER_FETCHES_URLS says the provider can fetch
it), and a note in place of a picture for a model without vision.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Exists, OuterRef
from PIL import Image
from storages.backends.s3 import S3Storage

from .models import Attachment
from .selectors import attachment_texts, attachments_for_messages

log = logging.getLogger(__name__)

BLOCK_OPEN = '<attachment name="{name}" type="{type}">'
BLOCK_CLOSE = "</attachment>"
# The smallest share of a document worth sending: below it only the note goes.
MIN_DOCUMENT_TOKENS = 32


def has_attachments() -> Exists:
    """Annotation/filter: the message carries at least one attachment."""
    return Exists(Attachment.objects.filter(message=OuterRef("pk")))


def image_tokens(width: int | None, height: int | None) -> int:
    """What OpenAI bills for a picture at `detail: auto/high`: 85 plus 170 per 512 px
    tile after fitting 2048×2048 and then 768 on the shorter side."""
    w, h = float(width or 512), float(height or 512)
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _guard(text: str) -> str:
    # A document must not be able to close its own block and speak outside it.
    return text.replace(BLOCK_CLOSE, "<\\/attachment>")


@dataclass
class TurnFiles:
    """A message's text with its attachments, fitted into `cap` tokens."""

    text: str
    tokens: int  # content only (no message framing), pictures included
    pictures: list[Attachment] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def content(self, urls: dict[int, str]) -> str | list[dict[str, Any]]:
        if not self.pictures:
            return self.text
        parts: list[dict[str, Any]] = []
        if self.text:
            parts.append({"type": "text", "text": self.text})
        for picture in self.pictures:
            url = urls.get(picture.pk)
            if url:
                parts.append({"type": "image_url", "image_url": {"url": url}})
        return parts


def _head(text: str, max_tokens: int, count: Callable[[str], int]) -> str:
    """The start of `text` within `max_tokens` (the counter's tokens)."""
    total = count(text)
    if total <= max_tokens:
        return text
    keep = max(len(text) * max_tokens // max(total, 1), 1)
    while keep > 1 and count(text[:keep]) > max_tokens:
        keep = keep * 7 // 8
    return text[:keep]


def merge_contents(
    first: str | list[dict[str, Any]], second: str | list[dict[str, Any]]
) -> str | list[dict[str, Any]]:
    """Two turns of one role as one message: text joined, content parts kept."""
    if isinstance(first, str) and isinstance(second, str):
        return first + "\n\n" + second

    def parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
        return (
            [{"type": "text", "text": content}] if isinstance(content, str) else content
        )

    return [*parts(first), {"type": "text", "text": "\n\n"}, *parts(second)]


def turn_files(
    *,
    text: str,
    attachments: Sequence[Attachment],
    texts: dict[int, str],
    cap: int,
    count: Callable[[str], int],
    vision: bool,
) -> TurnFiles:
    """Fit `text` (already within its share) and the attachments into `cap` tokens.

    Pictures cost their fixed price; documents share what is left, in order, each
    cut at the end with a note saying how much was shown when it does not fit."""
    pictures = [a for a in attachments if a.kind == Attachment.Kind.IMAGE]
    documents = [a for a in attachments if a.kind == Attachment.Kind.DOCUMENT]
    pieces = [text] if text else []
    notes: list[dict[str, Any]] = []
    shown_pictures: list[Attachment] = []
    used = count(text)
    for picture in pictures:
        if vision:
            shown_pictures.append(picture)
            used += image_tokens(picture.width, picture.height)
        else:
            pieces.append(
                f"[The user attached the picture “{picture.name}”; this model cannot "
                "see pictures.]"
            )
            used += count(pieces[-1])
    for index, document in enumerate(documents):
        body = texts.get(document.pk, "")
        head = BLOCK_OPEN.format(
            name=_attr(document.name), type=_attr(document.content_type)
        )
        framing = count(head) + count(BLOCK_CLOSE) + 2
        share = (cap - used) // (len(documents) - index) - framing
        total = count(body)
        tail = ""
        if document.text_truncated:
            tail = (
                f"\n[… “{document.name}” is longer than the "
                f"{settings.ATTACHMENT_MAX_TEXT_CHARS:,} characters kept at upload …]"
            )
        if not body.strip():
            body = "(No text could be read from this file.)"
        elif total + count(tail) > share:
            note = (
                f"\n[… “{document.name}” is cut here: the first {{shown:,}} of "
                f"{total:,} tokens are shown; the rest did not fit in the context "
                "window …]"
            )
            room = max(share - count(note) - 8, 0)
            shown = room if room >= MIN_DOCUMENT_TOKENS else 0
            body = (_head(body, shown, count) if shown else "") + note.format(
                shown=shown
            )
            tail = ""
            notes.append(
                {
                    "id": document.pk,
                    "name": document.name,
                    "shown_tokens": shown,
                    "total_tokens": total,
                }
            )
        block = f"{head}\n{_guard(body)}{tail}\n{BLOCK_CLOSE}"
        pieces.append(block)
        used += count(block) + 2
    return TurnFiles(
        text="\n\n".join(pieces), tokens=used, pictures=shown_pictures, notes=notes
    )


def attachments_for_context(
    *, message_ids: Iterable[int]
) -> dict[int, list[Attachment]]:
    return attachments_for_messages(message_ids=message_ids)


def document_texts(*, attachments: Iterable[Attachment]) -> dict[int, str]:
    ids = [a.pk for a in attachments if a.kind == Attachment.Kind.DOCUMENT]
    return attachment_texts(ids=ids) if ids else {}


def picture_url_for_model(attachment: Attachment) -> str | None:
    """How the provider gets a picture: a presigned URL (S3/OSS storage and
    ATTACHMENT_PROVIDER_FETCHES_URLS) or the bytes as a data URL. Blocking I/O."""
    storage = default_storage
    if settings.ATTACHMENT_PROVIDER_FETCHES_URLS and isinstance(storage, S3Storage):
        return storage.url(
            attachment.storage_key,
            expire=settings.ATTACHMENT_PROVIDER_URL_SECONDS,
        )
    try:
        with storage.open(attachment.storage_key, "rb") as handle:
            data = handle.read(settings.ATTACHMENT_MAX_FILE_BYTES + 1)
    except Exception:
        log.warning("attachment %s: file unreadable", attachment.pk, exc_info=True)
        return None
    encoded = base64.b64encode(data).decode("ascii")
    return f"data:{attachment.content_type};base64,{encoded}"


def picture_urls_for_model(pictures: Iterable[Attachment]) -> dict[int, str]:
    urls = {}
    for picture in pictures:
        url = picture_url_for_model(picture)
        if url:
            urls[picture.pk] = url
    return urls


_BLOCK = re.compile(
    r'<attachment name="(?P<name>[^"]*)" type="[^"]*">\n(?P<body>.*?)\n</attachment>',
    re.DOTALL,
)


def _data_url_size(url: str) -> str | None:
    if not url.startswith("data:"):
        return None
    try:
        data = base64.b64decode(url.partition(",")[2])
        with Image.open(io.BytesIO(data)) as picture:  # reads the header only
            return f"{picture.width}×{picture.height}"
    except (ValueError, OSError):
        return None


def attachments_in_words(message: dict[str, Any]) -> str | None:
    """What a chat message carries besides its text, said in words (the offline
    demo model's answer about attachments); None when it carries nothing."""
    content = message.get("content")
    parts = (
        content if isinstance(content, list) else [{"type": "text", "text": content}]
    )
    text = "".join(
        str(p.get("text") or "")
        for p in parts
        if isinstance(p, dict) and p.get("type") == "text"
    )
    pictures = [
        str((p.get("image_url") or {}).get("url") or "")
        for p in parts
        if isinstance(p, dict) and p.get("type") == "image_url"
    ]
    documents = [
        (html.unescape(m.group("name")), len(m.group("body").split()))
        for m in _BLOCK.finditer(text)
    ]
    if not pictures and not documents:
        return None
    said = []
    if pictures:
        sizes = [_data_url_size(url) or "a linked picture" for url in pictures]
        noun = "picture" if len(pictures) == 1 else "pictures"
        said.append(f"{len(pictures)} {noun} ({', '.join(sizes)})")
    if documents:
        noun = "document" if len(documents) == 1 else "documents"
        listed = ", ".join(f"*{name}*, {words:,} words" for name, words in documents)
        said.append(f"{len(documents)} {noun} ({listed})")
    return "You attached " + " and ".join(said) + "."


def text_of(message: dict[str, Any]) -> str:
    """The typed text of a chat message, without its attachment blocks."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            str(p.get("text") or "")
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return _BLOCK.sub("", content or "").strip()
