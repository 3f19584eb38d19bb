"""Parsing and validation of client frames (protocol.md "Client to server").

Every frame is one JSON object with a string `type`; anything else, an unknown type,
or a field of the wrong kind is `BadRequest`, answered with an `error` frame.
"""

from __future__ import annotations

import json
from typing import Any

from .exceptions import BadRequest
from .validation import INVALID_TEXT_MESSAGE, has_invalid_text, is_valid_text

CLIENT_TYPES = frozenset(
    {
        "ping",
        "dialogue.open",
        "dialogue.history",
        "message.send",
        "message.edit",
        "reply.stop",
        "reply.regenerate",
        "reply.continue",
        "image.generate",
        "branch.switch",
    }
)
MAX_CLIENT_ID = 100


def parse_frame(text: str | None) -> dict[str, Any]:
    if text is None:
        raise BadRequest("Frames must be JSON text, not binary.")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("A frame must be a JSON object.")
    if has_invalid_text(data):
        raise BadRequest(INVALID_TEXT_MESSAGE)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise BadRequest("A frame needs a string `type`.")
    if kind not in CLIENT_TYPES:
        raise BadRequest(f"Unknown frame type {kind[:50]!r}.")
    return data


def ref_of(data: Any) -> str | None:
    if isinstance(data, dict):
        for name, size in (("client_id", MAX_CLIENT_ID), ("type", 50)):
            value = data.get(name)
            if isinstance(value, str) and is_valid_text(value):
                return value[:size]
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dialogue_id(data: dict[str, Any], *, nullable: bool = False) -> int | None:
    if "dialogue" not in data:
        raise BadRequest("The field `dialogue` is required.")
    value = data["dialogue"]
    if value is None and nullable:
        return None
    if not _is_int(value):
        raise BadRequest("`dialogue` must be a dialogue id (an integer).")
    return value


def text_field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"The field `{name}` must be a string.")
    return value


def client_id(data: dict[str, Any]) -> str:
    value = data.get("client_id")
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CLIENT_ID:
        raise BadRequest(
            f"`client_id` must be a string of 1 to {MAX_CLIENT_ID} characters."
        )
    return value


def optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string.")
    return value or None


def optional_ids(data: dict[str, Any], name: str) -> list[int] | None:
    """A list of ids (attachments), or None when the field is absent or null."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_int(v) and v > 0 for v in value):
        raise BadRequest(f"`{name}` must be a list of ids (integers).")
    return value


def optional_seq(data: dict[str, Any]) -> int | None:
    value = data.get("seq")
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise BadRequest("`seq` must be a non-negative integer.")
    return value
