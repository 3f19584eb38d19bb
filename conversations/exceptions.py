"""Domain errors. Each carries a protocol error code and a message a user can read."""

from __future__ import annotations

from django.utils.functional import Promise


class ChatError(Exception):
    code = "internal"
    default_message = "Something went wrong on our side. Please try again."

    def __init__(self, message: str | Promise | None = None, **extra: object) -> None:
        self.message = message or self.default_message
        self.extra = extra
        super().__init__(self.message)

    def as_dict(self) -> dict[str, object]:
        # Messages may be lazy translations: rendered in the language active now.
        return {"code": self.code, "message": str(self.message), **self.extra}


class BadRequest(ChatError):
    code = "bad_request"
    default_message = "The request was not understood."


class DialogueNotFound(ChatError):
    code = "not_found"
    default_message = "No such dialogue."


class MessageNotFound(ChatError):
    code = "not_found"
    default_message = "No such message."


class TooLong(ChatError):
    code = "too_long"
    default_message = "The message is too long."


class Busy(ChatError):
    code = "busy"
    default_message = "A reply is already being written in this dialogue."


class RateLimited(ChatError):
    code = "rate_limited"
    default_message = "You are sending messages too fast."


class QuotaExceeded(ChatError):
    code = "quota_exceeded"
    default_message = "You have used your daily allowance."


class Unavailable(ChatError):
    code = "unavailable"
    default_message = "No model provider is configured or reachable."


class DatabaseUnavailable(Unavailable):
    default_message = (
        "The site cannot reach its database right now. Please try again in a moment."
    )


class LLMError(ChatError):
    """The model could not answer; `code` is the protocol error code for the message."""

    code = "upstream_error"
    default_message = "The model could not answer."

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class PresetNotFound(ChatError):
    code = "not_found"
    default_message = "No such preset."


class ShareNotFound(ChatError):
    code = "not_found"
    default_message = "No such share link."


class UpstreamIncomplete(LLMError):
    """The stream ended without a finish reason or [DONE]; `empty` when nothing at
    all came (how llama-cpp-python's server answers a prompt over its window)."""

    def __init__(self, message: str | None = None, *, empty: bool = False):
        super().__init__(message, code="upstream_incomplete")
        self.empty = empty


class ContextLengthExceeded(LLMError):
    """The server refused the prompt as longer than its window (`window` when it
    named it): the context is shrunk and the reply asked again once."""

    def __init__(self, message: str | None = None, *, window: int | None = None):
        super().__init__(message, code="context_length")
        self.window = window
