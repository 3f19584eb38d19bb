"""The reply runner: produces a stored turn's reply in a task of this process.

`turn_begin` announces the user's message and spawns the task on the process's
`Worker` (services/workers.py); the task builds the context, iterates `reply_stream`
(services/streaming.py) and publishes each event to the dialogue's sockets
(conversations/realtime/), then names the dialogue. An image request renders its
picture instead. Nothing here parses frames or knows about sockets.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
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
from ..counting import estimate_observe
from ..exceptions import BadRequest, ChatError, QuotaExceeded, TooLong
from ..llm import ChatLLM, get_llm
from ..models import Dialogue, Message
from ..realtime import broadcast, get_store, publish_delta
from ..serializers import dialogue_dict, message_dict, with_images
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


@dataclass
class _Prompt:
    """What the model is sent for one reply, and what it is allowed to write."""

    messages: list[dict[str, Any]]
    used_tokens: int | None = None
    max_tokens: int | None = None
    estimated: bool = True  # counted with tiktoken's estimate, not the server's


# Windows a server turned out to have, smaller than CHAT_MODELS says (it refused a
# prompt that fit the configured one), per model, for this process's life.
_LEARNT_WINDOWS: dict[str, int] = {}
MIN_LEARNT_WINDOW = 256  # below that, a server's figure is not believed


def _window(spec: ModelSpec) -> int:
    return min(spec.context_tokens, _LEARNT_WINDOWS.get(spec.name, spec.context_tokens))


def _budget(window: int) -> int:
    """The input budget within `window`: the catalog's share kept for the answer,
    and a tenth to spare (the count was wrong once already)."""
    reserve = min(settings.LLM_OUTPUT_RESERVE_TOKENS, window // 4)
    return max(int((window - reserve) * 0.9), 64)


def _max_tokens(spec: ModelSpec, used: int | None, window: int | None = None) -> int:
    """The output room: what the prompt leaves of the window, at most
    CHAT_MAX_REPLY_TOKENS (a reply that needs more ends cut off: Continue)."""
    room = (window or _window(spec)) - (used or 0) - PROMPT_MARGIN
    return min(max(room, MIN_OUTPUT_TOKENS), settings.CHAT_MAX_REPLY_TOKENS)


# Tokens a chat template may add beyond what was counted (a default system prompt,
# generation markers); the room below MIN_OUTPUT_TOKENS is never worth asking for.
PROMPT_MARGIN = 32
MIN_OUTPUT_TOKENS = 16


async def _context(
    turn: Turn, llm: ChatLLM, *, budget: int | None = None, window: int | None = None
) -> _Prompt:
    from .context import context_build

    reply = turn.reply
    assert reply is not None
    spec = resolve_model(reply.model)
    if budget is None and _window(spec) < spec.context_tokens:
        budget = _budget(_window(spec))
    context = await context_build(
        dialogue=turn.dialogue,
        model=spec,
        llm=llm,
        upto_message_id=reply.pk,
        budget=budget,
        continue_text=reply.content if turn.continuing else None,
    )
    used = context.report.get("used_tokens")
    return _Prompt(
        context.messages,
        used,
        _max_tokens(spec, used, window),
        context.report.get("tokenizer") != "server",
    )


async def _reply_setup(turn: Turn, llm: ChatLLM, store: Any, worker: Any) -> _Prompt:
    """Before the model is asked: the live state, `reply.started`, the context."""
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
        return await _context(turn, llm)
    except Exception:
        log.exception("context build failed for dialogue %s", dialogue.pk)
        content = turn.message.content if turn.message else ""
        return _Prompt([{"role": "user", "content": content}])


def _shrinker(turn: Turn, llm: ChatLLM) -> Any:
    """The context again, within the window the server named (or half the
    configured one), for the one retry after a refusal for length."""
    spec = resolve_model(turn.reply.model if turn.reply else None)

    async def shrink(
        named: int | None,
    ) -> tuple[list[dict[str, Any]], int | None] | None:
        window = min(named or _window(spec) // 2, _window(spec))
        if named and named >= MIN_LEARNT_WINDOW:
            # The server said so: the next replies on this model start within it.
            _LEARNT_WINDOWS[spec.name] = window
        budget = _budget(window)
        log.info(
            "reply %s refused for length; asking again within %d tokens",
            turn.reply.pk if turn.reply else None,
            budget,
        )
        try:
            prompt = await _context(turn, llm, budget=budget, window=window)
        except Exception:
            log.exception("smaller context failed")
            return None
        return prompt.messages, prompt.max_tokens

    return shrink


async def _reply_run(turn: Turn, llm: ChatLLM, control: ReplyControl) -> None:
    dialogue, reply = turn.dialogue, turn.reply
    assert reply is not None
    store = get_store()
    worker = get_worker()
    try:
        async with send_gate():
            prompt = await _reply_setup(turn, llm, store, worker)
        spec = resolve_model(reply.model)
        try:
            # The day's token quota bounds what the model may write (`max_tokens`),
            # counted now so concurrent replies cannot overdraw it.
            max_tokens, reserved = await db_async(quota_reserve_tokens)(
                user_id=reply.user_id,
                prompt_tokens=prompt.used_tokens or 0,
                # at most what the prompt leaves of the model's window
                cap=min(
                    prompt.max_tokens or settings.CHAT_MAX_REPLY_TOKENS,
                    settings.CHAT_MAX_REPLY_TOKENS,
                ),
            )
        except QuotaExceeded as exc:
            await _refuse(reply, exc)
            return
        tools, handler = _image_tool(reply)
        final: dict[str, Any] | None = None
        async for event in reply_stream(
            message=reply,
            llm=llm,
            messages=prompt.messages,
            control=control,
            tools=tools,
            tool_handler=handler,
            prompt_tokens=prompt.used_tokens,
            max_tokens=max_tokens,
            reserved=reserved,
            shrink=_shrinker(turn, llm),
        ):
            if event["type"] in ENDINGS:
                final = event
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
        completed = final is not None and final["type"] == "reply.completed"
        if completed and prompt.estimated and prompt.used_tokens:
            usage = final["message"].get("usage") if final else None
            if usage and not usage.get("estimated") and usage.get("prompt_tokens"):
                # The server's count corrects the estimate for the next prompts.
                estimate_observe(
                    model=reply.model,
                    counted=prompt.used_tokens,
                    reported=int(usage["prompt_tokens"]),
                )
        # Named also when the first reply failed or was stopped: from the user's
        # message then, without asking a model that did not answer.
        await _autotitle(dialogue, llm, spec, ask_model=completed)
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
        return Message.objects.prefetch_related(with_images()).get(pk=reply.pk)

    await _announce_failed(await db_async(fail)())


ENDINGS = ("reply.completed", "reply.stopped", "reply.failed")


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


async def _autotitle(
    dialogue: Dialogue, llm: ChatLLM, spec: ModelSpec, *, ask_model: bool = True
) -> None:
    if dialogue.title or dialogue.title_set_by_user:
        return
    try:
        from .dialogues import title_autoname

        updated = await title_autoname(
            dialogue=dialogue, llm=llm, model=spec, ask_model=ask_model
        )
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
        # Named after the picture asked for, whether it could be drawn or not.
        await _autotitle(
            turn.dialogue, get_llm(), resolve_model(reply.model), ask_model=False
        )
    except Exception:
        log.exception("image reply %s failed", reply.pk)
    finally:
        await _release(turn)
