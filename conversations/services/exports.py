"""Staff exports of whole dialogues (the admin's JSON and CSV actions).

Messages are read in one ordered pass over all selected dialogues, in chunks, with
their images prefetched per chunk: a bounded number of queries whatever the size.
Callers check the review permission and audit the access (services.review).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from ..models import Dialogue, Message
from ..serializers import dialogue_dict, iso, message_dict

CHUNK = 2000
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
        .prefetch_related("images")
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
        images = " ".join(str(i.pk) for i in m.images.all())
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
                    m.content,
                )
            ]
        )
    return ("\ufeff" + out.getvalue()).encode()
