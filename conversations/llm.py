"""The chat model gateway: the only module that imports `openai` for chat.

`ChatLLM` is what the services depend on. `OpenAIChatLLM` speaks to any
OpenAI-compatible endpoint (OpenAI, llama.cpp, Ollama, vLLM); `DemoChatLLM` is the
offline demo used when no provider is configured. Every failure becomes an `LLMError`
whose message a user can read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import httpx2
import openai
from django.conf import settings

from .catalog import DEMO_MODEL, provider_configured
from .exceptions import LLMError


@dataclass(slots=True)
class LLMChunk:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] | None = None
    finish_reason: str | None = None


class ChatLLM(Protocol):
    name: str

    def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[LLMChunk]: ...

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
    ) -> str: ...


def _status_error(exc: openai.APIStatusError) -> LLMError:
    status = exc.status_code
    detail = _provider_message(exc)
    if status == 429:
        return LLMError(
            "The model provider is rate limiting requests right now. Try again in a moment.",
            code="upstream_rate_limited",
        )
    if status in (401, 403):
        return LLMError(
            "The model provider refused the credentials. An operator must check OPENAI_API_KEY.",
            code="upstream_auth",
        )
    if status == 404:
        return LLMError(
            f"The model provider does not know this model. {detail}".strip(),
            code="upstream_not_found",
        )
    if status == 400:
        return LLMError(
            f"The model provider rejected the request: {detail}",
            code="upstream_rejected",
        )
    return LLMError(
        f"The model provider had an internal error (HTTP {status}). Try again in a moment.",
        code="upstream_error",
    )


def _provider_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return ""


def _transport_error(exc: BaseException) -> LLMError:
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return LLMError(
            "The model stopped responding (timed out). The text received so far was kept.",
            code="upstream_timeout",
        )
    if isinstance(exc, openai.APIConnectionError | httpx2.ConnectError):
        return LLMError(
            "The model provider could not be reached. Check OPENAI_BASE_URL or try again later.",
            code="unavailable",
        )
    return LLMError(
        "The connection to the model provider broke off mid-reply. The text received so far was kept.",
        code="upstream_disconnected",
    )


# (base URL, model) pairs whose server refused tools or stream_options: asked plainly.
_PLAIN_MODELS: set[tuple[str, str]] = set()
log = logging.getLogger(__name__)


class OpenAIChatLLM:
    """Streams through the raw SSE lines: `json.loads` per line costs ~20 µs where the
    SDK's typed chunk parsing costs ~150 µs (STACK.md gotcha 4)."""

    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[LLMChunk]:
        calls: dict[int, dict[str, Any]] = {}
        key = (str(self.client.base_url), model)
        plain = key in _PLAIN_MODELS
        while True:
            kwargs: dict[str, Any] = {}
            if not plain:
                kwargs["stream_options"] = {"include_usage": True}
                if tools:
                    kwargs["tools"] = tools
            try:
                # The body goes in as `extra_body`: the SDK's typed transform of the
                # messages costs ~0.2 ms per message per request (4.8 ms for a
                # 20-turn context, bench/README.md); these are plain JSON already.
                async with self.client.chat.completions.with_streaming_response.create(
                    model=model,
                    messages=[],
                    stream=True,
                    extra_body={"messages": messages, **kwargs},
                ) as response:
                    async for data in _sse_data(response.http_response):
                        if data == b"[DONE]":
                            break
                        chunk = _parse_chunk(data, calls)
                        if chunk is not None:
                            yield chunk
                break
            except openai.BadRequestError as exc:
                if plain or not kwargs:
                    raise _status_error(exc) from exc
                # A server without tool calling or usage reporting (some local
                # models) refuses the request: ask again without them, and remember.
                log.info("%s refused tools/stream_options; retrying without", model)
                _PLAIN_MODELS.add(key)
                plain = True
            except openai.APIStatusError as exc:
                raise _status_error(exc) from exc
            except (
                openai.APIError,
                httpx2.HTTPError,
                aiohttp.ClientError,  # read straight from aiohttp (_body_reader)
                TimeoutError,
                OSError,
            ) as exc:
                raise _transport_error(exc) from exc
        if calls:
            yield LLMChunk(
                tool_calls=[calls[i] for i in sorted(calls)], finish_reason="tool_calls"
            )

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
    ) -> str:
        try:
            result = await self.client.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=max_tokens,  # type: ignore[arg-type]
            )
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except (openai.APIError, httpx2.HTTPError, TimeoutError, OSError) as exc:
            raise _transport_error(exc) from exc
        return (result.choices[0].message.content or "") if result.choices else ""


def _body_reader(response: httpx2.Response) -> Callable[[], Awaitable[bytes]]:
    """An awaitable per body chunk (b"" at the end). Under the SDK's aiohttp transport
    an unencoded body (SSE always is, in practice) is read straight from aiohttp's
    reader, skipping four async-generator layers per token; the read timeout is
    aiohttp's socket timeout either way."""
    aiohttp_response = getattr(
        getattr(response.stream, "_stream", None), "_aiohttp_response", None
    )
    if aiohttp_response is not None and response.headers.get(
        "content-encoding", "identity"
    ) in ("identity", ""):
        return aiohttp_response.content.readany
    chunks = response.aiter_bytes().__aiter__()

    async def read() -> bytes:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return b""

    return read


async def _sse_data(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The `data:` payloads of an SSE body, split from raw bytes: httpx2's text line
    decoder costs more CPU per token than everything else the server does with it."""
    read = _body_reader(response)
    buffer = b""
    while piece := await read():
        buffer += piece
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = buffer[start:end]
            start = end + 1
            if line.startswith(b"data:"):
                yield line[5:].strip()
        buffer = buffer[start:]
    if buffer.startswith(b"data:"):
        yield buffer[5:].strip()


# json.loads' C scanner without its three Python layers: one call per token.
_scan = json.JSONDecoder().scan_once


def _parse_chunk(
    data: bytes | str, calls: dict[int, dict[str, Any]]
) -> LLMChunk | None:
    try:
        text = (data.decode() if type(data) is bytes else data).strip()
        obj, end = _scan(text, 0)
        if end != len(text):
            raise ValueError("trailing data")
    except (ValueError, StopIteration, UnicodeDecodeError) as exc:
        raise LLMError(
            "The model provider sent a malformed reply.", code="upstream_error"
        ) from exc
    if not isinstance(obj, dict):
        return None
    if "error" in obj and not obj.get("choices"):
        err = (
            obj["error"]
            if isinstance(obj["error"], dict)
            else {"message": str(obj["error"])}
        )
        message = str(err.get("message") or "unknown error")[:300]
        raise LLMError(
            f"The model provider reported an error mid-reply: {message}",
            code="upstream_error",
        )
    chunk = LLMChunk(usage=obj.get("usage") or None)
    for choice in obj.get("choices") or ():
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if content:
            chunk.text += content
        for call in delta.get("tool_calls") or ():
            slot = calls.setdefault(
                call.get("index", 0), {"id": "", "name": "", "arguments": ""}
            )
            fn = call.get("function") or {}
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] += fn.get("name") or ""
            slot["arguments"] += fn.get("arguments") or ""
        if choice.get("finish_reason"):
            chunk.finish_reason = choice["finish_reason"]
    if chunk.finish_reason == "content_filter":
        raise LLMError(
            "The provider's content filter stopped this reply. The text received so far was kept.",
            code="content_filter",
        )
    return chunk


DEMO_INTRO = (
    "Hello! I am the **offline demo model** of chatsite. No AI provider is configured "
    "yet, so this reply comes from the server itself, streamed token by token through "
    "the same pipeline a real model uses.\n\n"
)
DEMO_HOWTO = (
    "\n\nTo talk to a real model, set `OPENAI_API_KEY` (and `OPENAI_BASE_URL` for a "
    "local server such as llama.cpp, Ollama or vLLM), list the models in `CHAT_MODELS` "
    "and restart the server. See `.env.example`.\n\nTry `/image a lighthouse at dusk` "
    "to see image generation work offline too."
)


class DemoChatLLM:
    """An honest offline stand-in: says what it is and how to configure a real one."""

    name = "demo"

    def __init__(self, tokens_per_second: float) -> None:
        self.delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0

    @staticmethod
    def _last_user_text(messages: list[dict[str, Any]]) -> str:
        for message in reversed(messages):
            if message.get("role") == "user" and isinstance(
                message.get("content"), str
            ):
                return message["content"]
        return ""

    def reply_text(self, messages: list[dict[str, Any]]) -> str:
        text = self._last_user_text(messages).strip()
        words = re.findall(r"\w+", text)
        turns = sum(1 for m in messages if m.get("role") == "user")
        body = (
            f"You wrote {len(words)} word{'s' if len(words) != 1 else ''} "
            f"({len(text)} characters)"
        )
        if words:
            longest = max(words, key=len)
            body += f"; the longest word is *{longest}*"
        body += f". This dialogue has {turns} message{'s' if turns != 1 else ''} from you so far."
        if text:
            quoted = text if len(text) <= 200 else text[:200] + "…"
            body += "\n\n> " + quoted.replace("\n", "\n> ")
        return DEMO_INTRO + body + DEMO_HOWTO

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
    ) -> AsyncIterator[LLMChunk]:
        text = self.reply_text(messages)
        pieces = re.findall(r"\s*\S+", text) + (
            [text[len(text.rstrip()) :]] if text != text.rstrip() else []
        )
        for piece in pieces:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield LLMChunk(text=piece)
        yield LLMChunk(
            usage={
                "prompt_tokens": sum(
                    len(str(m.get("content", "")).split()) for m in messages
                ),
                "completion_tokens": len(pieces),
            },
            finish_reason="stop",
        )

    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
    ) -> str:
        text = " ".join(
            str(m.get("content", ""))
            for m in messages
            if m.get("role") in ("user", "assistant")
        )
        words = re.findall(r"\w+", text)
        return " ".join(words[:6]) if words else "Demo conversation"


# One client (and connection pool) per event loop: pooled connections belong to a loop.
_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[Any, ...], openai.AsyncOpenAI]
] = weakref.WeakKeyDictionary()


def _openai_client(
    api_key: str, base_url: str, connect: float, read: float, retries: int
) -> openai.AsyncOpenAI:
    try:
        per_loop = _clients.setdefault(asyncio.get_running_loop(), {})
    except RuntimeError:
        per_loop = {}
    key = (api_key, base_url, connect, read, retries)
    if key not in per_loop:
        per_loop[key] = _new_client(*key)
    return per_loop[key]


def _new_client(
    api_key: str, base_url: str, connect: float, read: float, retries: int
) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=api_key or "not-needed",  # local servers (llama.cpp, Ollama) ignore it
        base_url=base_url or None,
        # `read` bounds the silence between two chunks: a stalled upstream fails in
        # LLM_INACTIVITY_TIMEOUT seconds, not the SDK's default 600 s.
        timeout=httpx2.Timeout(read, connect=connect),
        # The SDK retries only before the response starts; mid-stream errors are final.
        max_retries=retries,
        # aiohttp under the SDK: ~30% less CPU per streamed token than its default
        # httpx2 client (bench/direct_sdk.py).
        http_client=openai.DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=2000, max_keepalive_connections=200)
        ),
    )


def get_llm() -> ChatLLM:
    """The configured gateway: the provider when one is configured, else the demo."""
    if not provider_configured():
        return DemoChatLLM(settings.DEMO_TOKENS_PER_SECOND)
    return OpenAIChatLLM(
        _openai_client(
            settings.OPENAI_API_KEY,
            settings.OPENAI_BASE_URL,
            settings.LLM_CONNECT_TIMEOUT,
            settings.LLM_INACTIVITY_TIMEOUT,
            settings.LLM_MAX_RETRIES,
        )
    )


__all__ = [
    "DEMO_MODEL",
    "ChatLLM",
    "DemoChatLLM",
    "LLMChunk",
    "OpenAIChatLLM",
    "get_llm",
]
