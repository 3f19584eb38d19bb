"""Domain errors of the imaging app, each with a code and a message a user can read."""

from __future__ import annotations

from conversations.exceptions import ChatError


class ImageGenerationError(ChatError):
    """The provider could not make the picture. `code` names the reason:

    content_policy, rate_limited, timeout, upstream_error, unavailable,
    invalid_image, bad_request, storage_error, internal.
    """

    code = "upstream_error"
    default_message = "The image could not be generated."

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"ImageGenerationError({self.code!r}, {self.message!r})"


class ImageNotFound(ChatError):
    code = "not_found"
    default_message = "No such image."
