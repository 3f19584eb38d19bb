"""What the fake replies: defaults, per-request directives and fault parsing.

A behaviour is a plain dict. The effective one for a request is the configured
defaults, overlaid by the scripted entry or the responder's answer, overlaid by a
`[[fake key=value ...]]` directive in the last user message (so browser tests can
steer the fake through the UI).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any

DEFAULTS: dict[str, Any] = {
    # chat replies
    "tokens": 30,  # length of the generated reply, one chunk per token
    "tps": 0.0,  # tokens per second; 0 = as fast as possible
    "text": None,  # explicit reply text instead of generated tokens
    "chunk_chars": 0,  # split `text` into chunks of this many chars (0 = by words)
    "style": "tok",  # generated text: "tok" ("tok0 tok1 ...") or "lorem"
    "echo": False,  # reply with the last user message (directive removed)
    "first_token_delay": 0.0,  # seconds before the first chunk
    "fault": None,  # see parse_fault
    "fault_times": 0,  # apply the fault to the first N matching requests (0 = all)
    "stall_seconds": 3600.0,  # how long `stall_after` stays silent
    "tool_call": None,  # {"name": ..., "arguments": {...} or "json"}
    # server-wide
    "models": ["fake-model", "fake-small", "fake-image"],
    "strict_models": False,  # 404 model_not_found for a model not in `models`
    "image_mode": "b64_json",  # default response_format for images: b64_json|url
    "image_delay": 0.0,  # seconds before an image response
    "image_fault": None,  # "policy" | "http_500" for every image request
}

# end_after: the body ends cleanly after K chunks, without a finish reason or [DONE]
# (how llama-cpp-python's server fails after its 200 header); ping_after: after K
# chunks only `: ping` comments for `stall_seconds`, then the rest.
FAULT_KINDS = ("error_after", "drop_after", "stall_after", "end_after", "ping_after")

_DIRECTIVE = re.compile(r"\[\[fake\b(.*?)\]\]", re.DOTALL)

# directive key -> (behaviour key, cast)
_DIRECTIVE_KEYS: dict[str, tuple[str, Any]] = {
    "tokens": ("tokens", int),
    "tps": ("tps", float),
    "text": ("text", str),
    "chunk_chars": ("chunk_chars", int),
    "style": ("style", str),
    "echo": ("echo", lambda v: v.lower() not in ("0", "false", "no")),
    "delay": ("first_token_delay", float),
    "first_token_delay": ("first_token_delay", float),
    "fault": ("fault", str),
    "fault_times": ("fault_times", int),
    "stall_seconds": ("stall_seconds", float),
}


@dataclass(frozen=True)
class Fault:
    kind: str  # http | error_after | drop_after | stall_after | content_filter
    status: int = 0  # for http
    after: int = 0  # chunks before the fault, for the *_after kinds


def parse_fault(value: str | None) -> Fault | None:
    """`http_429`, `http_500` (any `http_NNN`), `error_after:K`, `drop_after:K`,
    `stall_after:K`, `end_after:K`, `ping_after:K`, `context_length:N`,
    `content_filter`."""
    if not value:
        return None
    if value.startswith("http_"):
        return Fault("http", status=int(value[5:]))
    if value == "content_filter":
        return Fault("content_filter")
    if value.startswith("context_length:"):
        # refuse a prompt over N tokens as a server with an N-token window does
        return Fault("context_length", after=int(value.partition(":")[2]))
    kind, _, count = value.partition(":")
    if kind in FAULT_KINDS:
        return Fault(kind, after=int(count or 0))
    raise ValueError(f"unknown fake fault {value!r}")


def validate(overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown fake behaviour keys: {sorted(unknown)}")
    if "fault" in overrides:
        parse_fault(overrides["fault"])
    return overrides


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


def strip_directives(text: str) -> str:
    return _DIRECTIVE.sub("", text).strip()


def parse_directive(text: str) -> dict[str, Any]:
    """Behaviour overrides from the last `[[fake ...]]` directive in `text`.

    `[[fake tokens=20 tps=100 fault=drop_after:5]]`,
    `[[fake tool=generate_image prompt="a red fox"]]`,
    `[[fake tool=lookup args='{"q": "x"}']]`, `[[fake text="Hello there"]]`.
    """
    found = _DIRECTIVE.findall(text)
    if not found:
        return {}
    result: dict[str, Any] = {}
    tool_name = None
    arguments: dict[str, Any] = {}
    for item in shlex.split(found[-1]):
        key, _, value = item.partition("=")
        if key == "tool":
            tool_name = value
        elif key == "prompt":
            arguments["prompt"] = value
        elif key == "args":
            arguments.update(json.loads(value))
        elif key in _DIRECTIVE_KEYS:
            name, cast = _DIRECTIVE_KEYS[key]
            result[name] = cast(value or "true")
        else:
            raise ValueError(f"unknown fake directive key {key!r}")
    if tool_name:
        result["tool_call"] = {"name": tool_name, "arguments": arguments}
    if "fault" in result:
        parse_fault(result["fault"])
    return result


def tool_answered(messages: list[dict[str, Any]]) -> bool:
    """True when a `tool` message follows the last user message: the round trip
    is done and the model should now answer in text."""
    for message in reversed(messages):
        role = message.get("role")
        if role == "tool":
            return True
        if role == "user":
            return False
    return False


_LOREM = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "ut",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "ut",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
]

_WORDS = re.compile(r"\s*\S+|\s+$")


def reply_pieces(
    behaviour: dict[str, Any], messages: list[dict[str, Any]]
) -> list[str]:
    """The reply split into the chunks to stream, leading spaces included."""
    text = behaviour.get("text")
    if behaviour.get("echo"):
        text = strip_directives(last_user_text(messages)) or "(empty)"
    if text is not None:
        size = int(behaviour.get("chunk_chars") or 0)
        if size > 0:
            return [text[i : i + size] for i in range(0, len(text), size)]
        return _WORDS.findall(text) or [text]
    count = int(behaviour["tokens"])
    if behaviour.get("style") == "lorem":
        words = [_LOREM[i % len(_LOREM)] for i in range(count)]
        if words:
            words[0] = words[0].capitalize()
        return [w if i == 0 else " " + w for i, w in enumerate(words)]
    return [f"tok{i}" if i == 0 else f" tok{i}" for i in range(count)]


def count_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """A rough prompt size: words plus a few tokens of framing per message."""
    return sum(len(message_text(m).split()) + 3 for m in messages)
