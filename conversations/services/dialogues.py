"""Dialogue management: create, settings, rename, pin, delete and automatic titles
(exports: services.exports). Every change other tabs should see is broadcast after
the commit."""

from __future__ import annotations

import logging
import re
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..asyncdb import db_async
from ..catalog import ModelSpec, resolve_model
from ..exceptions import BadRequest
from ..models import Dialogue, Message, Preset
from ..serializers import dialogue_dict
from .usage import dialogue_create_rate_hit

log = logging.getLogger(__name__)

TITLE_MAX_CHARS = 200
TITLE_MAX_WORDS = 6
EDITABLE_FIELDS = frozenset({"title", "pinned", "model", "system_prompt"})


def _broadcast(dialogue_id: int, event: dict[str, Any]) -> None:
    from .. import realtime  # imported late to keep this module light

    realtime.broadcast_on_commit(dialogue_id, event)


def _clean_title(title: object) -> str:
    if not isinstance(title, str):
        raise BadRequest("The title must be text.", fields={"title": "invalid"})
    title = " ".join(title.split())
    if len(title) > TITLE_MAX_CHARS:
        raise BadRequest(
            f"The title is longer than {TITLE_MAX_CHARS} characters.",
            fields={"title": "too_long"},
        )
    return title


def clean_system_prompt(prompt: object) -> str:
    if not isinstance(prompt, str):
        raise BadRequest(
            "The system prompt must be text.", fields={"system_prompt": "invalid"}
        )
    if len(prompt) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise BadRequest(
            f"The system prompt is longer than {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
            fields={"system_prompt": "too_long"},
        )
    return prompt.strip()


def clean_model(name: object) -> str:
    if name is not None and not isinstance(name, str):
        raise BadRequest("The model must be a name.", fields={"model": "invalid"})
    try:
        return resolve_model(name or None).name
    except BadRequest as exc:
        raise BadRequest(exc.message, fields={"model": "unknown"}) from exc


def dialogue_create(
    *,
    user: Any,
    title: str = "",
    model: str | None = None,
    system_prompt: str = "",
    preset: Preset | None = None,
) -> Dialogue:
    """A new dialogue; a preset fills the system prompt and model not given. At most
    CHAT_DIALOGUES_PER_HOUR per user in any hour (`RateLimited`)."""
    if preset is not None and preset.owner_id != user.pk:
        raise BadRequest("No such preset.", fields={"preset": "not_found"})
    title = _clean_title(title)
    if preset is not None:
        system_prompt = system_prompt or preset.system_prompt
        model = model or preset.model or None
    model, system_prompt = clean_model(model), clean_system_prompt(system_prompt)
    dialogue_create_rate_hit(user=user)
    return Dialogue.objects.create(
        owner=user,
        title=title,
        title_set_by_user=bool(title),
        model=model,
        system_prompt=system_prompt,
    )


def dialogue_update(*, dialogue: Dialogue, **fields: Any) -> Dialogue:
    """Change title, pinned, model or system_prompt; a rename is the user's title for
    good. Other tabs get `dialogue.updated` once committed."""
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise BadRequest(
            "These fields cannot be changed.",
            fields={name: "unknown" for name in sorted(unknown)},
        )
    changed: list[str] = []
    if "title" in fields:
        dialogue.title = _clean_title(fields["title"])
        # An emptied title goes back to automatic naming.
        dialogue.title_set_by_user = bool(dialogue.title)
        changed += ["title", "title_set_by_user"]
    if "pinned" in fields:
        if not isinstance(fields["pinned"], bool):
            raise BadRequest(
                "pinned must be true or false.", fields={"pinned": "invalid"}
            )
        dialogue.pinned = fields["pinned"]
        changed.append("pinned")
    if "model" in fields:
        dialogue.model = clean_model(fields["model"])
        changed.append("model")
    if "system_prompt" in fields:
        dialogue.system_prompt = clean_system_prompt(fields["system_prompt"])
        changed.append("system_prompt")
    if not changed:
        return dialogue
    with transaction.atomic():
        dialogue.save(update_fields=[*changed, "updated_at"])
        _broadcast(
            dialogue.pk,
            {"type": "dialogue.updated", "dialogue": dialogue_dict(dialogue)},
        )
    return dialogue


def dialogue_delete(*, dialogue: Dialogue) -> None:
    """Delete the dialogue, its messages and their image and attachment files; tabs
    get `dialogue.deleted`."""
    from attachments.services import attachments_delete_for_dialogue
    from imaging.services import images_delete_for_dialogue

    dialogue_id = dialogue.pk
    with transaction.atomic():
        # Reads the file keys now, removes the files once the delete has committed.
        images_delete_for_dialogue(dialogue=dialogue)
        attachments_delete_for_dialogue(dialogue=dialogue)
        dialogue.delete()
        _broadcast(dialogue_id, {"type": "dialogue.deleted", "dialogue": dialogue_id})


# --- Automatic titles --------------------------------------------------------------

TITLE_INSTRUCTIONS = (
    "Write a short title of at most six words for a conversation that starts with the "
    "user's message below. Use the language of the message. Reply with the title only: "
    "no quotes, no trailing punctuation, no prefix."
)


def title_from_text(text: str) -> str:
    """A title of at most six words taken from `text` (model output or the message).

    Markdown markup goes; the words keep their punctuation ("Hello there! What can
    you do?", "/image a red bicycle"): only quotes around the whole title and a
    trailing period, comma, colon or semicolon are dropped."""
    text = re.sub(r"```.*?(```|$)", " ", text, flags=re.S)  # code says little
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^\s*(title\s*:\s*)", "", line, flags=re.I)
    line = re.sub(r"^\s*(#{1,6}|>+|[-*+]|\d+[.)])\s+", "", line)  # block markers
    line = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", line)  # links keep their text
    line = re.sub(r"\*\*|__|[*`]", "", line)  # emphasis and code marks
    words = line.split()[:TITLE_MAX_WORDS]
    title = " ".join(words).strip(" \"'“”‘’«»").rstrip(" .,;:")
    return title[:TITLE_MAX_CHARS]


def _first_user_text(dialogue: Dialogue) -> str | None:
    return (
        Message.objects.filter(dialogue_id=dialogue.pk, role=Message.Role.USER)
        .order_by("id")
        .values_list("content", flat=True)
        .first()
    )


def _save_auto_title(dialogue: Dialogue, title: str) -> Dialogue | None:
    now = timezone.now()
    # The WHERE clause re-checks, so a rename that raced us wins.
    updated = Dialogue.objects.filter(
        pk=dialogue.pk, title_set_by_user=False, title=""
    ).update(title=title, updated_at=now)
    if not updated:
        return None
    dialogue.title, dialogue.updated_at = title, now
    return dialogue


async def title_autoname(
    *, dialogue: Dialogue, llm: Any, model: ModelSpec | str, ask_model: bool = True
) -> Dialogue | None:
    """After the first exchange: name an untitled dialogue. Returns the dialogue when
    a title was saved (broadcast `dialogue.updated` with it), else None.

    `ask_model=False` (the first reply failed or was stopped): the title comes from
    the user's message itself, without asking a model that has just failed. A picture
    request is named after the picture it asks for."""
    if dialogue.title or dialogue.title_set_by_user:
        return None
    first = await db_async(_first_user_text)(dialogue)
    if not first or not first.strip():
        return None
    from imaging.services import image_prompt_from_text

    picture = image_prompt_from_text(first)
    if picture is not None:  # "/image a lighthouse at dusk"
        first, ask_model = picture, False
    name = model.name if isinstance(model, ModelSpec) else model
    title = await _title_from_model(llm, name, first, dialogue) if ask_model else ""
    title = title or title_from_text(first) or "New conversation"
    return await db_async(_save_auto_title)(dialogue, title)


async def _title_from_model(
    llm: Any, model: str, first: str, dialogue: Dialogue
) -> str:
    try:
        proposed = await llm.complete(
            model=model,
            messages=[
                {"role": "system", "content": TITLE_INSTRUCTIONS},
                {"role": "user", "content": first[:2000]},
            ],
            max_tokens=24,
        )
        return title_from_text(proposed or "")
    except Exception:  # a title is a nicety: fall back to the message itself
        log.info(
            "title for dialogue %s from the model failed", dialogue.pk, exc_info=True
        )
        return ""
