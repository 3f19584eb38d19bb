"""A websocket handshake that meets a database outage answers `unavailable`.

The handshake reads the session and its user from the database (channels'
`AuthMiddleware`); when PostgreSQL is away that raises and daphne would answer HTTP
500. Instead the socket is accepted, told `{"type": "error", "code": "unavailable"}`
and closed with 4013 (try again later), so clients retry rather than give up.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.db import DatabaseError

from conversations.exceptions import DatabaseUnavailable

log = logging.getLogger(__name__)

# RFC 6455's 1013 in the application range (docs/protocol.md): daphne's websocket
# library refuses 1013 from a server.
TRY_AGAIN_LATER = 4013


class DatabaseOutageGuard:
    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        accepted = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            await send(message)

        try:
            return await self.application(scope, receive, tracking_send)
        except DatabaseError:
            if accepted:
                raise
            log.warning("websocket handshake during a database outage", exc_info=True)
        frame = {"type": "error", **DatabaseUnavailable().as_dict()}
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(frame)})
        await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})
        return None
