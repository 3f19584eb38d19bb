"""The reply runner: produces a stored turn's reply in a task of this process.

`turn_begin` announces the user's message and spawns the task on the process's
`Worker` (services/workers.py); the task builds the context, iterates `reply_stream`
(services/streaming.py) and publishes each event to the dialogue's sockets
(conversations/live.py), then names the dialogue. An image request renders its
picture instead. Nothing here parses frames or knows about sockets.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imaging.generators import IMAGE_TOOL_NAME
from imaging.services import (
    image_create_pending,
    image_render,
    image_tool_arguments,
    image_tool_result,
    image_tool_schema,
)

from ..asyncdb import db_async
from ..catalog import ModelSpec, resolve_model
from ..exceptions import BadRequest, ChatError, QuotaExceeded, TooLong
from ..live import broadcast, get_store, publish_delta
from ..llm import ChatLLM, get_llm
from ..models import Dialogue, Message
from ..serializers import dialogue_dict, message_dict
from .messaging import Turn, message_reload, send_gate
from .streaming import FinalSaveFailed, ReplyControl, reply_stream
from .usage import quota_reserve_image, quota_reserve_tokens, usage_refund_image
from .workers import get_worker

log = logging.getLogger(__name__)


async def turn_begin(turn: Turn, *, llm: ChatLLM | None = None) -> None:
    """Announce the stored message and start producing the reply in this process."""
    assert turn.reply is not None
    worker = get_worker()
    await worker.ensure_started()
    if turn.message is not None:
        await broadcast(
            turn.dialogue.pk,
            {
                "type": "message.created",
                "message": message_dict(
                    turn.message, images=[], attachments=turn.attachments
                ),
            },
        )
    control = ReplyControl()
    if turn.image is not None:
        coro = _image_run(turn)
    else:
        coro = _reply_run(turn, llm or get_llm(), control)
    worker.spawn(turn.reply.pk, control, coro)


async def _reply_setup(
    turn: Turn, llm: ChatLLM, store: Any, worker: Any
) -> tuple[list[dict[str, Any]], int | None]:
    """Before the model is asked: the live state, `reply.started`, the context."""
    from .context import context_build

    dialogue, reply = turn.dialogue, turn.reply
    assert reply is not None
    try:
        await store.stream_start(reply.pk, worker.channel)
    except Exception:
        log.warning("no live state for reply %s", reply.pk, exc_info=True)
    await broadcast(
        dialogue.pk,
        {
            "type": "reply.started",
            "dialogue": dialogue.pk,
            "message": message_dict(reply, images=[]),
        },
    )
    try:
        context = await context_build(
            dialogue=dialogue,
            model=resolve_model(reply.model),
            llm=llm,
            upto_message_id=reply.pk,
        )
        return context.messages, context.report.get("used_tokens")
    except Exception:
        log.exception("context build failed for dialogue %s", dialogue.pk)
        content = turn.message.content if turn.message else ""
        return [{"role": "user", "content": content}], None


async def _reply_run(turn: Turn, llm: ChatLLM, control: ReplyControl) -> None:
    dialogue, reply = turn.dialogue, turn.reply
    assert reply is not None
    store = get_store()
    worker = get_worker()
    try:
        async with send_gate():
            messages, prompt_tokens = await _reply_setup(turn, llm, store, worker)
        spec = resolve_model(reply.model)
        try:
            # The day's token quota bounds what the model may write (`max_tokens`),
            # counted now so concurrent replies cannot overdraw it.
            max_tokens, reserved = await db_async(quota_reserve_tokens)(
                user_id=reply.user_id,
                prompt_tokens=prompt_tokens or 0,
                cap=settings.CHAT_MAX_REPLY_TOKENS,
            )
        except QuotaExceeded as exc:
            await _refuse(reply, exc)
            return
        tools, handler = _image_tool(reply)
        completed = False
        async for event in reply_stream(
            message=reply,
            llm=llm,
            messages=messages,
            control=control,
            tools=tools,
            tool_handler=handler,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            reserved=reserved,
        ):
            completed = completed or event["type"] == "reply.completed"
            try:
                if event["type"] == "reply.delta":
                    await publish_delta(event)
                else:
                    await broadcast(dialogue.pk, event)
            except Exception:
                # Redis restarting: the reply goes on and is saved; sockets that
                # missed frames catch up from dialogue.open.
                log.warning(
                    "could not publish %s of reply %s",
                    event["type"],
                    reply.pk,
                    exc_info=True,
                )
        if completed:
            await _autotitle(dialogue, llm, spec)
    except FinalSaveFailed as exc:
        # The database is away: the final state waits in the live store and the
        # reaper saves it when the database is back (finals_flush).
        log.error("final save of reply %s failed; kept in the live store", reply.pk)
        await _park_final(reply, exc.fields)
    except Exception:
        log.exception("reply %s failed", reply.pk)
        await _fail_if_streaming(reply)
    finally:
        await _release(turn)


SERVER_ERROR = (
    "The reply could not be completed because of a server error. "
    "The text written so far was kept; you can regenerate it."
)
SAVE_PENDING = (
    "The reply could not be saved yet because the database is unreachable. Its full "
    "text is kept and will be saved when the database is back."
)


async def _park_final(reply: Message, fields: dict[str, Any]) -> None:
    """Keep the final state in the live store and tell the dialogue's sockets that
    the reply ended (`reply.failed`, the full text, why it is not saved yet)."""
    try:
        await get_store().final_park(reply.pk, reply.dialogue_id, fields)
    except Exception:
        log.exception("could not keep the final state of reply %s", reply.pk)
    shown = copy.copy(reply)
    for name in ("content", "seq", "prompt_tokens", "completion_tokens"):
        if name in fields:
            setattr(shown, name, fields[name])
    shown.status = Message.Status.FAILED
    shown.error_code, shown.error_message = "unavailable", SAVE_PENDING
    await _announce_failed(shown)


async def _announce_failed(message: Message) -> None:
    try:
        await broadcast(
            message.dialogue_id,
            {
                "type": "reply.failed",
                "dialogue": message.dialogue_id,
                "message": message_dict(message),
            },
        )
    except Exception:
        log.warning("could not announce the failure of %s", message.pk, exc_info=True)


async def _refuse(reply: Message, exc: ChatError) -> None:
    """End a reply the model was never asked for (its quota is spent)."""

    def fail() -> Message:
        Message.objects.filter(pk=reply.pk, status=Message.Status.STREAMING).update(
            status=Message.Status.FAILED,
            error_code=exc.code,
            error_message=exc.message,
            prompt_tokens=0,
            completion_tokens=0,
            worker="",
            updated_at=timezone.now(),
        )
        return Message.objects.prefetch_related("images").get(pk=reply.pk)

    await _announce_failed(await db_async(fail)())


async def _fail_if_streaming(reply: Message) -> None:
    """Never leave a reply `streaming` after its task ended by an error, and never
    leave its tabs waiting: `reply.failed` goes out whatever the database says."""
    shown = copy.copy(reply)
    shown.status = Message.Status.FAILED
    shown.error_code, shown.error_message = "internal", SERVER_ERROR
    try:
        await db_async(
            Message.objects.filter(pk=reply.pk, status=Message.Status.STREAMING).update
        )(
            status=Message.Status.FAILED,
            error_code="internal",
            error_message=SERVER_ERROR,
            worker="",
            updated_at=timezone.now(),
        )
        shown = await message_reload(reply)
    except Exception:
        log.exception("could not mark reply %s failed", reply.pk)
    if shown.status == Message.Status.FAILED:
        await _announce_failed(shown)


async def _release(turn: Turn) -> None:
    store = get_store()
    assert turn.reply is not None
    try:
        await store.stream_finish(turn.reply.pk)
    except Exception:
        log.warning(
            "could not release the live state of reply %s", turn.reply.pk, exc_info=True
        )


async def _autotitle(dialogue: Dialogue, llm: ChatLLM, spec: ModelSpec) -> None:
    if dialogue.title or dialogue.title_set_by_user:
        return
    try:
        from .dialogues import title_autoname

        updated = await title_autoname(dialogue=dialogue, llm=llm, model=spec)
    except Exception:
        log.warning("auto title failed for dialogue %s", dialogue.pk, exc_info=True)
        return
    if updated is not None:
        await broadcast(
            dialogue.pk,
            {"type": "dialogue.updated", "dialogue": dialogue_dict(updated)},
        )


def _image_tool(reply: Message) -> tuple[list[dict[str, Any]] | None, Any]:
    """The `generate_image` tool offered to the model, and its handler."""
    if not settings.IMAGE_TOOL_ENABLED:
        return None, None

    async def handler(call: dict[str, Any]) -> Any:
        if call.get("name") != IMAGE_TOOL_NAME:
            yield f"Unknown tool {call.get('name')!r}."
            return
        try:
            prompt, size = image_tool_arguments(call.get("arguments") or "{}")
            await db_async(quota_reserve_image)(user_id=reply.user_id)
        except (BadRequest, TooLong, QuotaExceeded) as exc:
            yield f"The image could not be requested: {exc.message}"
            return
        try:
            image = await db_async(image_create_pending)(
                message=reply, prompt=prompt, size=size
            )
        except (BadRequest, TooLong) as exc:
            await db_async(usage_refund_image)(user_id=reply.user_id)
            yield f"The image could not be requested: {exc.message}"
            return
        yield await _image_event("image.started", reply)
        image = await image_render(image=image)
        ok = image.status == "complete"
        if not ok:
            await db_async(usage_refund_image)(user_id=reply.user_id)
        yield await _image_event("image.completed" if ok else "image.failed", reply)
        yield image_tool_result(image)

    return [image_tool_schema()], handler


async def _image_event(kind: str, message: Message) -> dict[str, Any]:
    fresh = await message_reload(message)
    return {
        "type": kind,
        "dialogue": message.dialogue_id,
        "message": message_dict(fresh),
    }


async def _image_run(turn: Turn) -> None:
    reply = turn.reply
    assert reply is not None
    try:
        await broadcast(turn.dialogue.pk, await _image_event("image.started", reply))
        image = await image_render(image=turn.image)
        ok = image.status == "complete"

        def finish() -> None:
            fields: dict[str, Any] = {
                "status": Message.Status.COMPLETE if ok else Message.Status.FAILED
            }
            if ok:
                fields["content"] = ""
            else:
                fields["error_code"] = image.error_code or "image_failed"
                fields["error_message"] = (
                    image.error_message or "The image could not be generated."
                )
            with transaction.atomic():
                Message.objects.filter(pk=reply.pk).update(
                    **fields, worker="", updated_at=timezone.now()
                )
                if not ok:  # counted when the request was stored
                    usage_refund_image(user_id=reply.user_id)

        await db_async(finish)()
        await broadcast(
            turn.dialogue.pk,
            await _image_event("image.completed" if ok else "image.failed", reply),
        )
        if ok:
            await _autotitle(turn.dialogue, get_llm(), resolve_model(reply.model))
    except Exception:
        log.exception("image reply %s failed", reply.pk)
    finally:
        await _release(turn)
