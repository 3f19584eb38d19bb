"""Token counts for a given model server (the context budget's unit).

tiktoken's tables (conversations/tokens.py) are OpenAI's: a llama-family model needs
far more tokens for non-English text than they count, and a context built on them
overflows the real window. Where the server offers its own tokenizer it is used
(`ServerCounter`, learnt by the gateway, conversations/llm.py); otherwise the
estimate is scaled by a factor that the server's reported usage corrects over time
(`EstimateCounter`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .tokens import (
    TOKENS_PER_MESSAGE,
    content_text,
    count_tokens,
    truncate_middle,
)


class TokenCounter(Protocol):
    exact: bool
    # Framing tokens a message costs beside its text (role markers, separators).
    per_message: int

    def count(self, text: str) -> int: ...


# Until a server reports usage, an estimate is taken as this much too low.
ESTIMATE_MARGIN = 1.25
# Chat templates frame a message with up to ~6 tokens (Llama 3's headers, ChatML's
# `<|im_start|>role\n … <|im_end|>\n`); counted generously when the text is exact.
TEMPLATE_TOKENS_PER_MESSAGE = 8
_FACTORS: dict[str, float] = {}
# Counts by (model, hash, length) of the text, never the texts themselves.
_SERVER_COUNTS: dict[tuple[str, int, int], int] = {}
_SERVER_COUNTS_MAX = 200_000


class EstimateCounter:
    """The tiktoken count times a per-model factor learnt from reported usage."""

    exact = False
    per_message = TOKENS_PER_MESSAGE + 1

    def __init__(self, model: str) -> None:
        self.model = model

    @property
    def factor(self) -> float:
        return _FACTORS.get(self.model, ESTIMATE_MARGIN)

    def count(self, text: str) -> int:
        raw = count_tokens(text, model=self.model)
        return math.ceil(raw * self.factor)


def estimate_observe(*, model: str, counted: int, reported: int) -> None:
    """Correct the model's factor from a prompt we counted as `counted` (with the
    current factor) that the server reported as `reported` tokens."""
    if counted <= 0 or reported <= 0:
        return
    factor = _FACTORS.get(model, ESTIMATE_MARGIN)
    # What the factor should have been, plus 5% for the variance between texts.
    wanted = factor * reported / counted * 1.05
    learnt = 0.5 * factor + 0.5 * wanted
    _FACTORS[model] = min(max(learnt, 1.0), 4.0)


class ServerCounter:
    """Counts with the server's own tokenizer (`tokenize(text)`, a blocking HTTP call:
    only ever called from a worker thread), each text once per process; the estimate
    stands in when the server does not answer."""

    exact = True
    per_message = TEMPLATE_TOKENS_PER_MESSAGE

    def __init__(self, model: str, tokenize: Callable[[str], int | None]) -> None:
        self.model = model
        self.tokenize = tokenize
        self.fallback = EstimateCounter(model)

    def count(self, text: str) -> int:
        if not text:
            return 0
        key = (self.model, hash(text), len(text))
        count = _SERVER_COUNTS.get(key)
        if count is None:
            measured = self.tokenize(text)
            if measured is None:
                return self.fallback.count(text)
            count = measured
            if len(_SERVER_COUNTS) >= _SERVER_COUNTS_MAX:
                _SERVER_COUNTS.clear()
            _SERVER_COUNTS[key] = count
        return count


def estimate_counter(model: str) -> EstimateCounter:
    return EstimateCounter(model)


def counter_message(message: Mapping[str, Any], counter: TokenCounter) -> int:
    """Tokens one chat message costs with `counter`, framing included."""
    return counter.per_message + counter.count(content_text(message.get("content")))


def counter_truncate(
    text: str, max_tokens: int, *, model: str, counter: TokenCounter
) -> tuple[str, int]:
    """`truncate_middle` measured with `counter`: the cut is made on tiktoken's ids,
    then tightened until the counter agrees it fits."""
    total = counter.count(text)
    if total <= max_tokens:
        return text, 0
    target = max_tokens
    for _ in range(4):
        raw = count_tokens(text, model=model) or 1
        cut, _dropped = truncate_middle(
            text, max(int(target * raw / total), 16), model=model
        )
        measured = counter.count(cut)
        if measured <= max_tokens:
            return cut, total - measured
        target = int(target * max_tokens / measured * 0.95)
    return cut, total - measured
