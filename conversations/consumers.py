"""The chat socket (protocol.md): parses frames, calls services, relays dialogue events.

Generation runs in tasks of the process's `Worker`, never in this handler, so
`reply.stop` is read while a reply streams and replies outlive the socket. The socket
joins the channel-layer groups of the dialogues it shows (`realtime.Subscriptions`)
and their events arrive at `chat_event`. Channels hands a consumer one message at a
time, so events that come while a dialogue is being opened wait in the socket's
channel until its `dialogue.state` has gone out.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from django.utils import translation

from . import protocol as p
from . import realtime
from .exceptions import ChatError, DatabaseUnavailable
from .serializers import dialogue_dict, message_dict
from .services import messaging, replies, tree
from .services.workers import accepting, get_worker
from .socket_sessions import CLOSE_CODE, get_watch

log = logging.getLogger(__name__)

# The user has CHAT_MAX_SOCKETS_PER_USER sockets open already (docs/protocol.md).
TOO_MANY_SOCKETS = 4429
# Application close codes (docs/protocol.md): daphne closes through autobahn, which
# refuses RFC 6455's 1009 and 1012 from a server application.
CLOSE_TOO_BIG = 4009
CLOSE_RESTARTING = 4012


def socket_language(scope: dict[str, Any]) -> str:
    """The language the page was served in: its cookie, else Accept-Language."""
    wanted = [scope.get("cookies", {}).get(settings.LANGUAGE_COOKIE_NAME) or ""]
    for name, value in scope.get("headers") or ():
        if name == b"accept-language":
            wanted += [
                p.split(";")[0].strip() for p in value.decode("latin-1").split(",")
            ]
    for code in wanted:
        try:
            return translation.get_supported_language_variant(code)
        except LookupError:
            continue
    return settings.LANGUAGE_CODE


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.subscriptions = realtime.Subscriptions(
            self.channel_layer, self.channel_name
        )
        self.language = socket_language(self.scope)
        await self.accept()
        if not self.scope["user"].is_authenticated:
            await self.close(code=4401)
        elif not accepting():
            await self.close(code=CLOSE_RESTARTING)  # reconnect to another process
        else:
            await get_worker().ensure_started()
            # Bound to its session: log-out, password change, deactivation, expiry.
            self.user_id = self.scope["user"].pk
            self.session_key = self.scope["session"].session_key
            await get_watch().add(self)
            # At most CHAT_MAX_SOCKETS_PER_USER sockets per user on all processes.
            member = f"{get_worker().id}:{uuid.uuid4().hex[:12]}"
            if await realtime.socket_admit(
                self.user_id, member, settings.CHAT_MAX_SOCKETS_PER_USER
            ):
                self.socket_member: str | None = member
            else:
                await self.close(code=TOO_MANY_SOCKETS, reason="too many sockets")

    async def session_closed(self) -> None:
        await self.close(code=CLOSE_CODE)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """channels' dispatch, without its `aclose_old_connections` before every
        message (a thread hop each, for every delta): this consumer reaches the
        database only through `db_async`, whose threads recycle their connections."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def disconnect(self, code: int) -> None:
        member = getattr(self, "socket_member", None)
        if member is not None:
            self.socket_member = None
            await realtime.get_store().socket_leave(self.user_id, member)
        get_watch().remove(self)
        subscriptions = getattr(self, "subscriptions", None)
        if subscriptions is not None:
            await subscriptions.leave_all()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if text_data is not None and len(text_data) > settings.CHAT_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        data: Any = None
        try:
            data = p.parse_frame(text_data)
            if data["type"] != "ping" and not await get_watch().valid(self):
                await self.session_closed()  # no work for a session that has ended
                return
            await getattr(self, "on_" + data["type"].replace(".", "_"))(data)
        except ChatError as exc:
            with translation.override(self.language):  # the page's language
                error = exc.as_dict()
            await self.send_json({"type": "error", **error, "ref": p.ref_of(data)})
        except DatabaseError:  # an outage: try again later, nothing is wrong with it
            log.warning("database unavailable for a frame", exc_info=True)
            await self.send_json(
                {
                    "type": "error",
                    **DatabaseUnavailable().as_dict(),
                    "ref": p.ref_of(data),
                }
            )
        except Exception:
            log.exception("frame handling failed")
            await self.send_json(
                {
                    "type": "error",
                    "code": "internal",
                    "message": ChatError.default_message,
                    "ref": p.ref_of(data),
                }
            )

    async def send_json(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event, separators=(",", ":")))

    async def chat_event(self, event: dict[str, Any]) -> None:
        """A dialogue event from the channel layer (its frame already JSON); deltas
        already in a `dialogue.state` this socket got are not sent again."""
        if self.subscriptions.admit(event):
            await self.base_send({"type": "websocket.send", "text": event["frame"]})

    async def chat_events(self, batch: dict[str, Any]) -> None:
        """Dialogue events that waited together in this socket's channel."""
        for event in batch["events"]:
            await self.chat_event(event)

    # --- client frames -------------------------------------------------------------

    async def on_ping(self, data: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def on_dialogue_open(self, data: dict[str, Any]) -> None:
        state, floors = await messaging.dialogue_open(
            user=self.scope["user"],
            dialogue_id=p.dialogue_id(data),
            subscribe=self.subscriptions.join,
        )
        self.subscriptions.shown(floors)
        await self.send_json(state)

    async def on_dialogue_history(self, data: dict[str, Any]) -> None:
        await self.send_json(
            await messaging.dialogue_history(
                user=self.scope["user"],
                dialogue_id=p.dialogue_id(data),
                before=data.get("before"),
            )
        )

    async def on_message_send(self, data: dict[str, Any], **options: Any) -> None:
        if not options.get("force_image"):
            options["attachments"] = p.optional_ids(data, "attachments")
        turn = await messaging.message_send(
            user=self.scope["user"],
            dialogue_id=p.dialogue_id(data, nullable=not options.get("replace_last")),
            content=p.text_field(
                data, "prompt" if options.get("force_image") else "content"
            ),
            client_id=p.client_id(data),
            model=p.optional_str(data, "model"),
            **options,
        )
        await self.begin(turn)

    async def on_message_edit(self, data: dict[str, Any]) -> None:
        await self.on_message_send(data, replace_last=True)

    async def on_image_generate(self, data: dict[str, Any]) -> None:
        await self.on_message_send(
            data, force_image=True, image_size=p.optional_str(data, "size")
        )

    async def on_reply_stop(self, data: dict[str, Any]) -> None:
        await messaging.reply_stop(
            user=self.scope["user"],
            dialogue_id=p.dialogue_id(data),
            seq=p.optional_seq(data),
        )

    async def on_reply_regenerate(self, data: dict[str, Any]) -> None:
        turn = await messaging.reply_regenerate(
            user=self.scope["user"], dialogue_id=p.dialogue_id(data)
        )
        await self.begin(turn)

    async def on_branch_switch(self, data: dict[str, Any]) -> None:
        await tree.branch_show(
            user=self.scope["user"],
            dialogue_id=p.dialogue_id(data),
            message_id=data.get("message"),
            subscribe=self.subscriptions.join,
        )

    async def on_reply_continue(self, data: dict[str, Any]) -> None:
        turn = await messaging.reply_continue(
            user=self.scope["user"], dialogue_id=p.dialogue_id(data)
        )
        await self.begin(turn)

    async def begin(self, turn: messaging.Turn) -> None:
        if turn.created_dialogue:
            await self.send_json(
                {"type": "dialogue.created", "dialogue": dialogue_dict(turn.dialogue)}
            )
        await self.subscriptions.join(turn.dialogue.pk)
        if turn.duplicate:
            assert turn.message is not None
            await self.send_json(
                {
                    "type": "message.created",
                    "message": message_dict(turn.message, images=[]),
                }
            )
        else:
            await replies.turn_begin(turn)
