"""Text every store and encoder accepts: no NUL (PostgreSQL refuses it in text) and no
lone surrogate (UTF-8 cannot encode one; JSON's \\u escapes can carry it). Checked on
every frame, API body and imported file before any work, so such input is a plain
`bad_request`, never an error deep inside a query or a log full of tracebacks."""

from __future__ import annotations

import re
from typing import Any

_INVALID_TEXT = re.compile("[\x00\ud800-\udfff]")
INVALID_TEXT_MESSAGE = "The text contains a NUL character or an unpaired surrogate."


def is_valid_text(value: str) -> bool:
    return _INVALID_TEXT.search(value) is None


def has_invalid_text(value: Any) -> bool:
    """Whether any string in a parsed JSON value (keys included) holds a NUL or a
    lone surrogate; iterative, so no nesting depth can exhaust the stack."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _INVALID_TEXT.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False
