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
import threading
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import httpx2
import openai
from django.conf import settings

from .catalog import DEMO_MODEL, provider_configured
from .counting import EstimateCounter, ServerCounter, TokenCounter
from .exceptions import ContextLengthExceeded, LLMError, UpstreamIncomplete


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
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]: ...

    def token_counter(self, model: str) -> TokenCounter: ...

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


def _transport_error(exc: BaseException, *, started: bool = False) -> LLMError:
    # A refused connection or an unknown host surfaces in several shapes (the SDK's
    # APIConnectionError, aiohttp's connector errors, a bare OSError): all of them
    # mean "not reachable", never "timed out".
    if any(isinstance(e, _CONNECT_ERRORS) for e in _chain(exc)):
        return LLMError(
            "The model server could not be reached (connection refused or unknown "
            "host). Check OPENAI_BASE_URL and that the server is running.",
            code="unavailable",
        )
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException | TimeoutError):
        return LLMError(
            "The model stopped responding (timed out). The text received so far was kept.",
            code="upstream_timeout",
        )
    if isinstance(exc, openai.APIConnectionError) and not started:
        return LLMError(
            "The model provider could not be reached. Check OPENAI_BASE_URL or try again later.",
            code="unavailable",
        )
    return LLMError(
        "The connection to the model provider broke off mid-reply. The text received so far was kept.",
        code="upstream_disconnected",
    )


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    httpx2.ConnectTimeout,
    aiohttp.ClientConnectorError,
    httpx2.ConnectError,
)

INCOMPLETE_MESSAGE = (
    "The model server ended this reply without finishing it (the stream closed "
    "without an end marker). The text received so far was kept; you can regenerate it."
)
INCOMPLETE_EMPTY_MESSAGE = (
    "The model server closed the reply without sending any text. It may have failed "
    "or run out of memory; try again, or regenerate the reply."
)
CONTEXT_MESSAGE = (
    "This conversation is longer than the model's context window, even shortened. "
    "Start a new dialogue or set the model's real window in CHAT_MODELS."
)
# How servers word a prompt over their window (llama.cpp, llama-cpp-python, vLLM,
# Ollama, OpenAI); a number after "window/context of" is the real window.
_CONTEXT_REFUSAL = re.compile(
    r"context[ _](?:window|length|size)|maximum context|exceeds? the available context"
    r"|too many tokens|prompt is too long",
    re.IGNORECASE,
)
_WINDOW_NUMBER = re.compile(
    r"(?:context window of|maximum context length is|context size \(?|n_ctx\W+)\s*(\d+)",
    re.IGNORECASE,
)


def context_error(detail: str) -> ContextLengthExceeded | None:
    """A refusal for length, with the window the server named (if it did)."""
    if not _CONTEXT_REFUSAL.search(detail):
        return None
    found = _WINDOW_NUMBER.search(detail)
    return ContextLengthExceeded(
        CONTEXT_MESSAGE, window=int(found.group(1)) if found else None
    )


class _IdleWatch:
    """Fails the reading task when no content arrived for `seconds` (loop time).

    The socket's read timeout cannot do this: llama.cpp sends `: ping` comments every
    15 s, so a stuck server that pings keeps the socket busy forever. Here only a
    chunk carrying text, tool calls, usage or a finish reason counts. Costs one
    float store per chunk; the timer re-arms itself lazily."""

    __slots__ = ("seconds", "last", "expired", "_loop", "_task", "_handle")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.last = self._loop.time()
        self.expired = False
        self._handle = self._loop.call_at(self.last + seconds, self._check)

    def _check(self) -> None:
        due = self.last + self.seconds
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self.expired = True
        if self._task is not None:
            self._task.cancel()

    def seen(self) -> None:
        self.last = self._loop.time()

    def close(self) -> None:
        self._handle.cancel()


# (base URL, model) pairs whose server refused tools or stream_options: asked plainly.
_PLAIN_MODELS: set[tuple[str, str]] = set()
log = logging.getLogger(__name__)


def _uses_openai(base_url: str) -> bool:
    return "api.openai.com" in base_url


class OpenAIChatLLM:
    """Streams through the raw SSE lines of the SDK's raw response (`iter_bytes`):
    `json.loads` per line costs ~20 µs where the SDK's typed chunk parsing costs
    ~150 µs (STACK.md gotcha 4)."""

    name = "openai"

    def __init__(self, client: openai.AsyncOpenAI, inactivity: float = 60.0) -> None:
        self.client = client
        self.inactivity = inactivity

    def token_counter(self, model: str) -> TokenCounter:
        return server_token_counter(str(self.client.base_url), model)

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[LLMChunk]:
        calls: dict[int, dict[str, Any]] = {}
        base_url = str(self.client.base_url)
        key = (base_url, model)
        plain = key in _PLAIN_MODELS
        while True:
            kwargs: dict[str, Any] = {}
            if max_tokens:
                # OpenAI's reasoning models refuse `max_tokens`; local servers
                # (llama.cpp, llama-cpp-python, Ollama) know only `max_tokens`.
                name = (
                    "max_completion_tokens" if _uses_openai(base_url) else "max_tokens"
                )
                kwargs[name] = max_tokens
            if not plain:
                kwargs["stream_options"] = {"include_usage": True}
                if tools:
                    kwargs["tools"] = tools
            ended = got_content = False
            watch: _IdleWatch | None = None
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
                    watch = _IdleWatch(self.inactivity)
                    async for data in _sse_data(response.iter_bytes()):
                        if data == b"[DONE]":
                            ended = True
                            break
                        chunk = _parse_chunk(data, calls)
                        if chunk is None:
                            continue
                        if chunk.text or chunk.usage or chunk.finish_reason or calls:
                            watch.seen()
                        if chunk.finish_reason:
                            ended = True
                        if chunk.text or calls:
                            got_content = True
                        yield chunk
                if not ended:
                    raise UpstreamIncomplete(
                        INCOMPLETE_MESSAGE if got_content else INCOMPLETE_EMPTY_MESSAGE,
                        empty=not got_content,
                    )
                break
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if (
                    watch is not None
                    and watch.expired
                    and task is not None
                    and task.uncancel() == 0  # not also stopped meanwhile
                ):
                    raise LLMError(
                        "The model stopped sending text (no content for "
                        f"{self.inactivity:g} seconds). The text received so far "
                        "was kept.",
                        code="upstream_timeout",
                    ) from None
                raise
            except openai.BadRequestError as exc:
                refusal = context_error(_provider_message(exc) or str(exc.message))
                if refusal is not None:
                    raise refusal from exc
                if plain or not (set(kwargs) & {"tools", "stream_options"}):
                    raise _status_error(exc) from exc
                # A server without tool calling or usage reporting (some local
                # models) refuses the request: ask again without them, and remember.
                log.info("%s refused tools/stream_options; retrying without", model)
                _PLAIN_MODELS.add(key)
                plain = True
            except openai.APIStatusError as exc:
                refusal = context_error(_provider_message(exc))
                if refusal is not None and exc.status_code in (400, 413, 422, 500):
                    raise refusal from exc
                raise _status_error(exc) from exc
            except (
                openai.APIError,
                httpx2.HTTPError,
                aiohttp.ClientError,
                TimeoutError,
                OSError,
            ) as exc:
                # Once the response began, a broken connection is a break mid-reply,
                # not an unreachable server.
                raise _transport_error(exc, started=watch is not None) from exc
            finally:
                if watch is not None:
                    watch.close()
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
                messages=messages,  # type: ignore[arg-type]  # plain dicts, as sent
                max_tokens=max_tokens,  # type: ignore[arg-type]
            )
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except (openai.APIError, httpx2.HTTPError, TimeoutError, OSError) as exc:
            raise _transport_error(exc) from exc
        return (result.choices[0].message.content or "") if result.choices else ""


# --- The server's own tokenizer ----------------------------------------------------
#
# llama.cpp's server: POST /tokenize {"content"} -> {"tokens"}; vLLM: POST /tokenize
# {"model", "prompt"} -> {"count", "tokens"}; llama-cpp-python: POST /extras/tokenize
# {"input", "model"} -> {"tokens"}. They live beside /v1, not under it. Which one a
# server answers is learnt once per (base URL, model); OpenAI and Ollama have none.
_TOKENIZE_PATHS = ("/extras/tokenize", "/tokenize")
_tokenize_paths: dict[tuple[str, str], str | None] = {}
_tokenize_lock = threading.Lock()
_http: httpx2.Client | None = None
TOKENIZE_TIMEOUT = 5.0


def _sync_http() -> httpx2.Client:
    global _http
    if _http is None:
        _http = httpx2.Client(timeout=TOKENIZE_TIMEOUT)
    return _http


def _server_root(base_url: str) -> str:
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def _tokenize_once(root: str, path: str, model: str, text: str) -> int | None:
    try:
        response = _sync_http().post(
            root + path,
            json={"model": model, "content": text, "prompt": text, "input": text},
        )
    except httpx2.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("count"), int):
        return int(body["count"])
    tokens = body.get("tokens")
    return len(tokens) if isinstance(tokens, list) else None


def _tokenize_path(root: str, model: str) -> str | None:
    key = (root, model)
    with _tokenize_lock:
        if key in _tokenize_paths:
            return _tokenize_paths[key]
    found = None
    if "api.openai.com" not in root:
        for path in _TOKENIZE_PATHS:
            if _tokenize_once(root, path, model, "Hello") is not None:
                found = path
                break
    log.info("tokenizer of %s at %s: %s", model, root, found or "estimate")
    with _tokenize_lock:
        _tokenize_paths[key] = found
    return found


def server_token_counter(base_url: str, model: str) -> TokenCounter:
    """The model's own token counts when its server offers them (learnt once, with a
    blocking request: call from a worker thread), else the corrected estimate."""
    root = _server_root(base_url)
    path = _tokenize_path(root, model)
    if path is None:
        return EstimateCounter(model)
    return ServerCounter(model, lambda text: _tokenize_once(root, path, model, text))


async def _sse_data(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data:` payloads of an SSE body, split from raw bytes: httpx2's text line
    decoder costs more CPU per token than everything else the server does with it.
    Comment lines (`: ping`) and other fields are skipped."""
    buffer = b""
    async for piece in body:
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
_scan = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__


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
        refusal = context_error(message)
        if refusal is not None:
            raise refusal
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
# A message with Chinese characters gets the demo's answer in Chinese, as a real model
# answers in the language it is asked in.
DEMO_CJK = re.compile(r"[\u3400-\u9fff]")
DEMO_INTRO_ZH = (
    "你好！我是 chatsite 的**离线演示模型**。目前还没有配置 AI 服务，所以这条回复由服务器"
    "自己生成，并像真实模型一样逐字流式传输。\n\n"
)
DEMO_HOWTO_ZH = (
    "\n\n要与真实模型对话，请设置 `OPENAI_API_KEY`（本地服务如 llama.cpp、Ollama 或 "
    "vLLM 还需设置 `OPENAI_BASE_URL`），在 `CHAT_MODELS` 中列出模型，然后重启服务器。"
    "参见 `.env.example`。\n\n试试 `/image 黄昏时的灯塔`，离线也能生成图片。"
)


class DemoChatLLM:
    """An honest offline stand-in: says what it is and how to configure a real one."""

    name = "demo"

    def __init__(self, tokens_per_second: float) -> None:
        self.delay = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0

    def token_counter(self, model: str) -> TokenCounter:
        return EstimateCounter(model)

    @staticmethod
    def _last_user(messages: list[dict[str, Any]]) -> dict[str, Any]:
        for message in reversed(messages):
            if message.get("role") == "user":
                return message
        return {}

    def reply_text(self, messages: list[dict[str, Any]]) -> str:
        from attachments.context import attachments_in_words, text_of

        last = self._last_user(messages)
        text = text_of(last)
        attached = attachments_in_words(last)
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
        zh = bool(DEMO_CJK.search(text))
        if zh:
            body = f"你写了 {len(text)} 个字符；在这个对话中你已发送 {turns} 条消息。"
        if text:
            quoted = text if len(text) <= 200 else text[:200] + "…"
            body += "\n\n> " + quoted.replace("\n", "\n> ")
        if attached:
            body += (
                f"\n\n{attached} A real model configured with `:vision` in "
                "`CHAT_MODELS` sees the pictures; every model reads the documents."
            )
        if zh:
            return DEMO_INTRO_ZH + body + DEMO_HOWTO_ZH
        return DEMO_INTRO + body + DEMO_HOWTO

    async def stream(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        max_tokens: int | None = None,
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
        words = text.split()  # punctuation and a leading "/image" stay, as typed
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
        # `read` bounds the silence of the socket (not the SDK's default 600 s); time
        # without content is bounded by the stream's own watch (_IdleWatch).
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
        ),
        inactivity=settings.LLM_INACTIVITY_TIMEOUT,
    )


__all__ = [
    "DEMO_MODEL",
    "ContextLengthExceeded",
    "ChatLLM",
    "DemoChatLLM",
    "LLMChunk",
    "OpenAIChatLLM",
    "get_llm",
]
