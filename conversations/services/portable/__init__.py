"""Dialogues in and out of chatsite: our own file (`chatsite.dialogue.v2`, exact
round trip) and ChatGPT's `conversations.json` (or the zip it comes in).

`dialogues_import` reads one file and stores everything in it in one transaction:
a file that cannot be read imports nothing and says why.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction

from imaging.services import image_delete_files

from ...models import Dialogue
from ...validation import INVALID_TEXT_MESSAGE, has_invalid_text
from .chatgpt import parse_chatgpt
from .chatsite import FORMAT, FORMAT_V1, dialogue_export_portable, parse_chatsite
from .model import ImportFileInvalid, Parsed
from .store import dialogue_store

__all__ = [
    "FORMAT",
    "ImportFileInvalid",
    "dialogue_export_portable",
    "dialogues_import",
]

log = logging.getLogger(__name__)


def _from_zip(raw: bytes) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = [n for n in archive.namelist() if n.endswith(".json")]
            name = next(
                (n for n in names if n.rsplit("/", 1)[-1] == "conversations.json"),
                names[0] if len(names) == 1 else None,
            )
            if name is None:
                raise ImportFileInvalid(
                    "The zip file has no conversations.json (or more than one JSON file)."
                )
            info = archive.getinfo(name)
            if info.file_size > settings.CHAT_IMPORT_MAX_BYTES:
                raise ImportFileInvalid("The file inside the zip is too large.")
            return archive.read(name)
    except zipfile.BadZipFile:
        raise ImportFileInvalid("The zip file is damaged.") from None


def parse(raw: bytes) -> Parsed:
    """The dialogues in a file, or `ImportFileInvalid` saying why there are none."""
    if raw[:4] == b"PK\x03\x04":
        raw = _from_zip(raw)
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ImportFileInvalid("The file is not text (UTF-8).") from None
    except json.JSONDecodeError as exc:
        raise ImportFileInvalid(
            f"The file is not valid JSON (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise ImportFileInvalid("The file is nested too deeply.") from None
    if has_invalid_text(data):
        raise ImportFileInvalid(INVALID_TEXT_MESSAGE)
    if isinstance(data, dict) and data.get("format") in (FORMAT, FORMAT_V1):
        return parse_chatsite(data)
    if isinstance(data, dict) and str(data.get("format", "")).startswith("chatsite."):
        raise ImportFileInvalid(
            f"This chatsite file format ({data['format']}) is not supported."
        )
    if isinstance(data, list) and all(
        isinstance(c, dict) and "mapping" in c for c in data
    ):
        return parse_chatgpt(data)
    raise ImportFileInvalid(
        "This is neither a chatsite dialogue export nor ChatGPT's conversations.json."
    )


def dialogues_import(*, user: Any, name: str, raw: bytes) -> dict[str, Any]:
    """Import one file for `user`: a summary {"file", "format", "imported": [{"id",
    "title", "messages"}], "skipped": [{"title", "reason"}], "skipped_messages":
    [{"reason", "count"}]}. `ImportFileInvalid` when nothing could be imported."""
    if len(raw) > settings.CHAT_IMPORT_MAX_BYTES:
        raise ImportFileInvalid(
            f"The file is larger than {settings.CHAT_IMPORT_MAX_BYTES // 1_000_000} MB."
        )
    parsed = parse(raw)
    sources = [d.imported_from for d in parsed.dialogues if d.imported_from]
    here = set(
        Dialogue.objects.filter(owner=user, imported_from__in=sources).values_list(
            "imported_from", flat=True
        )
    )
    imported: list[dict[str, Any]] = []
    skipped = list(parsed.skipped)
    messages_skipped: dict[str, int] = {}
    saved_keys: list[str] = []
    try:
        with transaction.atomic():
            for portable in parsed.dialogues:
                if portable.imported_from and portable.imported_from in here:
                    skipped.append(
                        {"title": portable.title, "reason": "it was imported before"}
                    )
                    continue
                here.add(portable.imported_from)
                dialogue = dialogue_store(
                    user=user, portable=portable, saved_keys=saved_keys
                )
                imported.append(
                    {
                        "id": dialogue.pk,
                        "title": dialogue.title,
                        "messages": len(portable.messages),
                    }
                )
                for reason, count in portable.skipped.items():
                    messages_skipped[reason] = messages_skipped.get(reason, 0) + count
    except DatabaseError:
        image_delete_files(keys=saved_keys)
        log.exception("import of %r by user %s failed", name, user.pk)
        raise ImportFileInvalid(
            "The file could not be stored; nothing was imported."
        ) from None
    except Exception:
        image_delete_files(keys=saved_keys)
        raise
    return {
        "file": name,
        "format": parsed.format,
        "imported": imported,
        "skipped": skipped,
        "skipped_messages": [
            {"reason": reason, "count": count}
            for reason, count in sorted(messages_skipped.items())
        ],
    }
