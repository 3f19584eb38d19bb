"""OpenAI chat completion wire format: SSE chunk bytes and whole responses.

Each stream encodes its constant part (id, model, created) once and splices the
JSON-escaped piece in, so hundreds of concurrent streams cost little per chunk.
"""

from __future__ import annotations

import functools
import json
from typing import Any

DONE = b"data: [DONE]\n\n"

_dumps = functools.lru_cache(maxsize=8192)(json.dumps)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class ChunkEncoder:
    def __init__(self, *, completion_id: str, model: str, created: int, usage: bool):
        self.head = (
            f'data: {{"id":{_compact(completion_id)},"object":"chat.completion.chunk",'
            f'"created":{created},"model":{_compact(model)},'
            f'"system_fingerprint":"fp_fake","choices":['
        )
        self.tail = '],"usage":null}\n\n' if usage else "]}\n\n"
        self._content_head = (self.head + '{"index":0,"delta":{"content":').encode()
        self._content_tail = (
            '},"logprobs":null,"finish_reason":null}' + self.tail
        ).encode()

    def _choice(self, delta: dict[str, Any], finish_reason: str | None) -> bytes:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return (self.head + _compact(choice) + self.tail).encode()

    def content(self, piece: str) -> bytes:
        return self._content_head + _dumps(piece).encode() + self._content_tail

    def role(self, *, content: str | None = "") -> bytes:
        return self._choice({"role": "assistant", "content": content}, None)

    def tool_start(self, *, call_id: str, name: str) -> bytes:
        call = {
            "index": 0,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._choice({"tool_calls": [call]}, None)

    def tool_arguments(self, part: str) -> bytes:
        call = {"index": 0, "function": {"arguments": part}}
        return self._choice({"tool_calls": [call]}, None)

    def finish(self, reason: str) -> bytes:
        return self._choice({}, reason)

    def usage(self, *, prompt_tokens: int, completion_tokens: int) -> bytes:
        usage = usage_dict(prompt_tokens, completion_tokens)
        return (self.head + "]," + f'"usage":{_compact(usage)}}}\n\n').encode()


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_event(message: str) -> bytes:
    error = {"message": message, "type": "server_error", "code": "fake_stream_error"}
    return f"data: {_compact({'error': error})}\n\n".encode()


def tool_arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def completion(
    *,
    completion_id: str,
    model: str,
    created: int,
    text: str,
    tool_call: dict[str, Any] | None,
    finish_reason: str,
    usage: dict[str, int],
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text or None,
        "refusal": None,
    }
    if tool_call is not None:
        message["tool_calls"] = [tool_call]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage,
    }


_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request (fake).", "invalid_request_error", None),
    401: (
        "Incorrect API key provided (fake).",
        "invalid_request_error",
        "invalid_api_key",
    ),
    404: ("Not found (fake).", "invalid_request_error", "not_found"),
    429: (
        "Rate limit reached for requests (fake). Please try again in 0s.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    503: ("The engine is currently overloaded (fake).", "server_error", "overloaded"),
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    type_: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    default_message, default_type, default_code = _ERRORS.get(
        status, (f"Fake HTTP {status}.", "server_error", None)
    )
    return {
        "error": {
            "message": message or default_message,
            "type": type_ or default_type,
            "param": None,
            "code": code or default_code,
        }
    }
