"""What an import file holds, whatever its format: dialogues of message trees."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from ...exceptions import BadRequest


class ImportFileInvalid(BadRequest):
    """The file cannot be imported; the message says why, in words a user reads."""


@dataclass
class PortableImage:
    prompt: str
    revised_prompt: str = ""
    status: str = "complete"
    model: str = ""
    size: str = ""
    width: int | None = None
    height: int | None = None
    content_type: str = "image/png"
    error_code: str = ""
    error_message: str = ""
    data: bytes | None = None


@dataclass
class PortableAttachment:
    name: str
    data: bytes | None = None


@dataclass
class PortableMessage:
    key: str  # unique within its dialogue; parents are referred to by it
    parent: str | None
    role: str
    content: str
    created_at: datetime
    status: str = "complete"
    model: str = ""
    seq: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool = False
    cut_off: bool = False
    error_code: str = ""
    error_message: str = ""
    replaced: bool = False
    images: list[PortableImage] = field(default_factory=list)
    attachments: list[PortableAttachment] = field(default_factory=list)


@dataclass
class PortableDialogue:
    title: str
    created_at: datetime
    updated_at: datetime
    last_activity_at: datetime
    model: str = ""
    system_prompt: str = ""
    pinned: bool = False
    title_set_by_user: bool = False
    imported_from: str = ""
    # Parents before children; the store keeps this order (ids grow down the tree).
    messages: list[PortableMessage] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class Parsed:
    format: str
    dialogues: list[PortableDialogue]
    skipped: list[dict[str, str]] = field(default_factory=list)
