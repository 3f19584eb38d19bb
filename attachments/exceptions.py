"""Domain errors of attachments, each with a code and a message a user can read."""

from __future__ import annotations

from conversations.exceptions import ChatError


class AttachmentRefused(ChatError):
    """An upload or a send refused. `code` names why: empty, too_large,
    unsupported_type, type_mismatch, quota_exceeded, storage_error, bad_request."""

    code = "bad_request"
    default_message = "The file was not accepted."

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AttachmentNotFound(ChatError):
    code = "not_found"
    default_message = "No such attachment."
