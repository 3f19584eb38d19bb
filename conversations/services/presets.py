"""Presets: a user's reusable name + system prompt + model."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from ..exceptions import BadRequest
from ..models import Dialogue, Preset
from ..serializers import iso
from .dialogues import clean_model, clean_system_prompt, dialogue_update

NAME_MAX_CHARS = 100
EDITABLE_FIELDS = frozenset({"name", "system_prompt", "model"})


def preset_dict(preset: Preset) -> dict[str, Any]:
    return {
        "id": preset.pk,
        "name": preset.name,
        "system_prompt": preset.system_prompt,
        "model": preset.model,
        "created_at": iso(preset.created_at),
        "updated_at": iso(preset.updated_at),
    }


def _clean_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("A preset needs a name.", fields={"name": "required"})
    name = " ".join(name.split())
    if len(name) > NAME_MAX_CHARS:
        raise BadRequest(
            f"The name is longer than {NAME_MAX_CHARS} characters.",
            fields={"name": "too_long"},
        )
    return name


def _clean_preset_model(name: object) -> str:
    # Empty means "the site's default model at the time of use".
    return clean_model(name) if name else ""


def _save(preset: Preset, **kwargs: Any) -> Preset:
    try:
        with transaction.atomic():
            preset.save(**kwargs)
    except IntegrityError as exc:
        raise BadRequest(
            "You already have a preset with this name.", fields={"name": "duplicate"}
        ) from exc
    return preset


def preset_create(
    *, user: Any, name: str, system_prompt: str = "", model: str = ""
) -> Preset:
    preset = Preset(
        owner=user,
        name=_clean_name(name),
        system_prompt=clean_system_prompt(system_prompt),
        model=_clean_preset_model(model),
    )
    return _save(preset)


def preset_update(*, preset: Preset, **fields: Any) -> Preset:
    unknown = set(fields) - EDITABLE_FIELDS
    if unknown:
        raise BadRequest(
            "These fields cannot be changed.",
            fields={name: "unknown" for name in sorted(unknown)},
        )
    if "name" in fields:
        preset.name = _clean_name(fields["name"])
    if "system_prompt" in fields:
        preset.system_prompt = clean_system_prompt(fields["system_prompt"])
    if "model" in fields:
        preset.model = _clean_preset_model(fields["model"])
    if not fields:
        return preset
    return _save(preset, update_fields=[*fields, "updated_at"])


def preset_delete(*, preset: Preset) -> None:
    preset.delete()


def preset_apply(*, preset: Preset, dialogue: Dialogue) -> Dialogue:
    """Give the dialogue the preset's system prompt and (when it names one) model."""
    if preset.owner_id != dialogue.owner_id:
        raise BadRequest("No such preset.", fields={"preset": "not_found"})
    fields: dict[str, Any] = {"system_prompt": preset.system_prompt}
    if preset.model:
        fields["model"] = preset.model
    return dialogue_update(dialogue=dialogue, **fields)
