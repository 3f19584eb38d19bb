"""What an uploaded file is, decided by its content, and what is kept of it.

Pictures (PNG, JPEG, GIF, WebP, recognised by Pillow) are re-encoded within
ATTACHMENT_IMAGE_MAX_SIDE, which drops EXIF and GPS; more pixels than
ATTACHMENT_IMAGE_MAX_PIXELS are refused before anything is decoded. Documents are
PDF (text extracted with pypdf) or UTF-8 text (plain, Markdown, CSV, JSON, source
code); markup a browser would run (HTML, SVG, XML) and binary data are refused. The
name only labels the file: a name that claims another kind than the content is
refused, and nothing is accepted because of its name. Files are read in bounded
chunks from the temporary file of the upload, never whole into memory (a picture's
decoded pixels are bounded by the pixel cap).
"""

from __future__ import annotations

import codecs
import io
import json
import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

from .exceptions import AttachmentRefused
from .kinds import PICTURE_EXTENSIONS, TEXT_TYPES

CHUNK = 64 * 1024
PICTURE_FORMATS = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
}
_PICTURE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
# Content a browser would run or render as a page; never kept, whatever its name.
_MARKUP = re.compile(
    rb"^\s*(?:<!doctype\s+html|<html|<head|<body|<script|<svg|<\?xml|<iframe)", re.I
)
_SCRIPT = re.compile(rb"<(?:script|iframe|object|embed)\b", re.I)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "application/pdf": "pdf",
}


@dataclass
class Intake:
    """What to store: `data` (re-encoded picture bytes) or the upload file itself."""

    kind: str  # "image" | "document"
    content_type: str
    name: str
    data: bytes | None = None
    width: int | None = None
    height: int | None = None
    pages: int | None = None
    text: str = ""
    text_truncated: bool = False

    @property
    def extension(self) -> str:
        return EXTENSIONS.get(self.content_type, "txt")


def clean_name(name: str) -> str:
    """The display name: last path part, no control characters, at most 200 chars."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if ch.isprintable())
    name = " ".join(name.split()).strip(". ")
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:190] + dot + ext[:9]) if dot and len(ext) <= 9 else name[:200]
    return name or "file"


def _extension(name: str) -> str:
    return name.rpartition(".")[2].lower() if "." in name else ""


def _claimed(name: str) -> str | None:
    ext = _extension(name)
    if ext in PICTURE_EXTENSIONS:
        return "picture"
    if ext == "pdf":
        return "PDF"
    if ext in TEXT_TYPES:
        return "text"
    return None


_DESCRIBED = {"picture": "a picture", "PDF": "a PDF", "text": "text"}
_NAMED = {"picture": "a picture", "PDF": "a PDF file", "text": "a text file"}


def _mismatch(name: str, actual: str, described: str | None = None) -> None:
    """Refuse a file whose name claims another kind ("picture", "PDF", "text")."""
    claimed = _claimed(name)
    if claimed is not None and claimed != actual:
        raise AttachmentRefused(
            "type_mismatch",
            f"“{name}” is named like {_NAMED[claimed]}, but its content is "
            f"{described or _DESCRIBED[actual]}. Rename it or attach the right file.",
        )


def inspect_upload(*, file: IO[bytes], name: str) -> Intake:
    """Decide what `file` is from its content and prepare what is kept of it.

    Raises AttachmentRefused with a reason a user can read."""
    name = clean_name(name)
    file.seek(0)
    head = file.read(2048)
    if not head:
        raise AttachmentRefused("empty", f"“{name}” is empty (0 bytes).")
    file.seek(0)
    if head.startswith(_PICTURE_MAGIC) or (
        head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    ):
        _mismatch(name, "picture")
        return _picture(file, name)
    if b"%PDF-" in head[:1024]:
        _mismatch(name, "PDF")
        return _pdf(file, name)
    return _text(file, name, head)


# --- Pictures ---------------------------------------------------------------------


def _picture(file: IO[bytes], name: str) -> Intake:
    max_side = settings.ATTACHMENT_IMAGE_MAX_SIDE
    max_pixels = settings.ATTACHMENT_IMAGE_MAX_PIXELS
    unreadable = AttachmentRefused(
        "unsupported_type", f"“{name}” looks like a picture but could not be read."
    )
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check, in case a frame is larger than the header says.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as source:
                if source.format not in PICTURE_FORMATS:
                    raise AttachmentRefused(
                        "unsupported_type",
                        f"“{name}” is a {source.format} picture; PNG, JPEG, GIF and "
                        "WebP are accepted.",
                    )
                width, height = source.size
                if width * height > max_pixels or width <= 0 or height <= 0:
                    raise AttachmentRefused(
                        "too_large",
                        f"“{name}” is {width}×{height} pixels, more than the "
                        f"{max_pixels:,} accepted.",
                    )
                if source.format == "JPEG":
                    # Decode at a reduced scale when that is still large enough.
                    source.draft("RGB", (max_side, max_side))
                picture = ImageOps.exif_transpose(source)  # a copy, loaded
    except AttachmentRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AttachmentRefused(
            "too_large", f"“{name}” decodes to too many pixels (a decompression bomb)."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise unreadable from None
    picture.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    alpha = picture.mode in ("RGBA", "LA", "PA") or (
        picture.mode == "P" and "transparency" in picture.info
    )
    out = io.BytesIO()
    if alpha:
        picture = picture.convert("RGBA")
        picture.info = {}  # no EXIF, XMP, text chunks or ICC carried over
        picture.save(out, format="PNG", optimize=False)
        content_type = "image/png"
    else:
        picture = picture.convert("RGB")
        picture.info = {}
        picture.save(out, format="JPEG", quality=85, optimize=True)
        content_type = "image/jpeg"
    return Intake(
        kind="image",
        content_type=content_type,
        name=name,
        data=out.getvalue(),
        width=picture.width,
        height=picture.height,
    )


# --- PDF ----------------------------------------------------------------------------


def _pdf(file: IO[bytes], name: str) -> Intake:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    limit = settings.ATTACHMENT_MAX_TEXT_CHARS
    unreadable = AttachmentRefused(
        "unsupported_type", f"“{name}” looks like a PDF but could not be read."
    )
    parts: list[str] = []
    length = 0
    truncated = False
    try:
        reader = PdfReader(file)
        if reader.is_encrypted and not reader.decrypt(""):
            raise AttachmentRefused(
                "unsupported_type",
                f"“{name}” is a password-protected PDF; remove the password first.",
            )
        pages = len(reader.pages)
        for number, page in enumerate(reader.pages, start=1):
            if number > settings.ATTACHMENT_PDF_MAX_PAGES or length >= limit:
                truncated = True
                break
            text = (page.extract_text() or "").strip()
            if text:
                parts.append(f"[page {number}]\n{text}")
                length += len(parts[-1]) + 2
    except AttachmentRefused:
        raise
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
        RecursionError,
        AssertionError,
        IndexError,
        ZeroDivisionError,
    ):
        raise unreadable from None
    text = "\n\n".join(parts)
    if len(text) > limit:
        text, truncated = text[:limit], True
    return Intake(
        kind="document",
        content_type="application/pdf",
        name=name,
        pages=pages,
        text=text,
        text_truncated=truncated,
    )


# --- Text ---------------------------------------------------------------------------


def _text(file: IO[bytes], name: str, head: bytes) -> Intake:
    limit = settings.ATTACHMENT_MAX_TEXT_CHARS
    not_text = AttachmentRefused(
        "unsupported_type",
        f"“{name}” is not a picture (PNG, JPEG, GIF, WebP), a PDF or UTF-8 text.",
    )
    body = head.removeprefix(codecs.BOM_UTF8)
    if _MARKUP.match(body) or _SCRIPT.search(head):
        if _claimed(name) in ("picture", "PDF"):
            _mismatch(name, "markup", "an HTML page")
        raise AttachmentRefused(
            "unsupported_type",
            f"“{name}” is HTML, SVG or XML markup, which is not accepted; "
            "attach it as plain text or a PDF.",
        )
    _mismatch(name, "text")
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
    kept: list[str] = []
    kept_chars = 0
    controls = 0
    total = 0
    file.seek(0)
    try:
        while chunk := file.read(CHUNK):
            text = decoder.decode(chunk)
            total += len(text)
            controls += len(_CONTROL.findall(text))
            if kept_chars < limit:
                kept.append(text[: limit - kept_chars])
                kept_chars += len(kept[-1])
        text = decoder.decode(b"", final=True)
        total += len(text)
        if kept_chars < limit:
            kept.append(text[: limit - kept_chars])
    except UnicodeDecodeError:
        raise not_text from None
    # NUL and other control characters: binary data that happens to decode.
    if controls and controls * 1000 > total:
        raise not_text
    content = "".join(kept)
    content_type = TEXT_TYPES.get(_extension(name), "text/plain")
    if content_type == "application/json" and total <= 5 * 1024 * 1024:
        content_type = _json_type(content, total, limit)
    return Intake(
        kind="document",
        content_type=content_type,
        name=name,
        text=content,
        text_truncated=total > limit,
    )


def _json_type(content: str, total: int, limit: int) -> str:
    """JSON only if it parses; otherwise it is kept as plain text."""
    if total > limit:
        return "application/json"
    try:
        json.loads(content)
    except ValueError:
        return "text/plain"
    return "application/json"
