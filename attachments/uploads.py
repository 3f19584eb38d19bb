"""Upload handlers: every uploaded file goes to a temporary file on disk (never into
memory, whatever its size) and an upload past the per-file limit stops early."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler


class LimitedTemporaryFileUploadHandler(TemporaryFileUploadHandler):
    """Django's temporary-file handler with a byte limit per request's files."""

    def __init__(self, request: Any = None, *, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.exceeded = True
            # Read and drop the rest of the body rather than reset the connection:
            # the browser then sees our answer instead of a network error.
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)
