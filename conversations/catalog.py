"""The models a user may pick: `CHAT_MODELS` is `name` or `name:context_tokens`, either
followed by `:vision` for a model that sees pictures, comma separated (e.g.
`gpt-4o-mini:128000:vision,llama3.2:8192`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from .exceptions import BadRequest

DEMO_MODEL = "offline-demo"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    context_tokens: int
    output_reserve: int
    # The model reads pictures (OpenAI `image_url` content parts).
    vision: bool = False

    @property
    def input_budget(self) -> int:
        return max(256, self.context_tokens - self.output_reserve)


def provider_configured() -> bool:
    return bool(settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


@lru_cache(maxsize=8)
def _parse(raw: str, default_window: int, reserve: int) -> tuple[ModelSpec, ...]:
    specs = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        vision = item.lower().endswith(":vision")
        if vision:
            item = item[: -len(":vision")]
        name, _, window = (
            item.rpartition(":")
            if item.rsplit(":", 1)[-1].isdigit()
            else (item, "", "")
        )
        context = int(window) if window else default_window
        # Never reserve more than a quarter of a small window for the answer.
        specs.append(
            ModelSpec(name.strip(), context, min(reserve, context // 4), vision)
        )
    return tuple(specs)


def chat_models() -> tuple[ModelSpec, ...]:
    specs = _parse(
        settings.CHAT_MODELS,
        settings.LLM_DEFAULT_CONTEXT_TOKENS,
        settings.LLM_OUTPUT_RESERVE_TOKENS,
    )
    if not provider_configured():
        window = settings.LLM_DEFAULT_CONTEXT_TOKENS
        # The demo describes attached pictures in words, so it takes them.
        return (
            ModelSpec(
                DEMO_MODEL,
                window,
                min(settings.LLM_OUTPUT_RESERVE_TOKENS, window // 4),
                vision=True,
            ),
        )
    if not specs:
        name = settings.DEFAULT_CHAT_MODEL or "gpt-4o-mini"
        return _parse(
            name,
            settings.LLM_DEFAULT_CONTEXT_TOKENS,
            settings.LLM_OUTPUT_RESERVE_TOKENS,
        )
    return specs


def default_model() -> ModelSpec:
    specs = chat_models()
    wanted = settings.DEFAULT_CHAT_MODEL
    for spec in specs:
        if spec.name == wanted:
            return spec
    return specs[0]


def resolve_model(name: str | None) -> ModelSpec:
    """The spec for `name` (the default when empty); refuses models not offered."""
    if not name:
        return default_model()
    for spec in chat_models():
        if spec.name == name:
            return spec
    if not provider_configured():
        # Dialogues made against a provider keep working on the demo, and vice versa.
        return default_model()
    raise BadRequest(f"The model {name!r} is not available here.")
