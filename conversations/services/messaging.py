"""Use cases of the chat socket: send, open, history, stop, regenerate, edit, images.

Each validates, stores, and hands generation to this process's `Worker`; nothing
refused here ever reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from imaging.generators import IMAGE_TOOL_NAME
from imaging.services import (
    image_create_pending,
    image_prompt_from_text,
    image_render,
    image_tool_arguments,
    image_tool_result,
    image_tool_schema,
)

from .. import selectors
from ..asyncdb import db_async
from ..catalog import ModelSpec, resolve_model
from ..exceptions import (
    BadRequest,
    Busy,
    MessageNotFound,
    RateLimited,
    TooLong,
    Unavailable,
)
from ..live import broadcast, get_store, publish_delta
from ..llm import ChatLLM, get_llm
from ..models import Dialogue, Message
from ..serializers import dialogue_dict, message_dict
from .streaming import ReplyControl, reply_stream
from .usage import quota_check, usage_record_image
from .workers import dialogue_lock, get_worker

log = logging.getLogger(__name__)

MUTEX_SECONDS = 30  # longer than any insert; expires by itself if a process dies

# The longest a send waits for its turn to be set up: a slot held long (a context
# summarised by the model first) must not hold the others back.
SEND_GATE_WAIT_SECONDS = 2.0

_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def send_gate() -> AsyncIterator[None]:
    """At most CHAT_SEND_CONCURRENCY sends of this process in their setup (store,
    context) at once. A send costs milliseconds of CPU; a burst of them let through
    at once starves the streams already running, whose frames then arrive late.
    Gated, the burst queues here and only first deltas wait (at most
    SEND_GATE_WAIT_SECONDS, then the send goes ahead anyway)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(settings.CHAT_SEND_CONCURRENCY)
    try:
        async with asyncio.timeout(SEND_GATE_WAIT_SECONDS):
            await gate.acquire()
    except TimeoutError:
        yield
        return
    try:
        yield
    finally:
        gate.release()


def _gated(func: Callable[..., Awaitable[Turn]]) -> Callable[..., Awaitable[Turn]]:
    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Turn:
        async with send_gate():
            return await func(*args, **kwargs)

    return run


@dataclass
class Turn:
    """What a send stored: the user message and the reply (or image) to produce."""

    dialogue: Dialogue
    message: Message | None
    reply: Message | None = None
    image: Any = None
    created_dialogue: bool = False
    duplicate: bool = False


def image_prompt(content: str) -> str | None:
    """The picture asked for by `/image …` or `image: …`, else None."""
    return image_prompt_from_text(content)


def _check_length(content: str) -> None:
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise TooLong(
            f"The message is {len(content):,} characters long; the limit is {limit:,}."
        )
    if not content.strip():
        raise BadRequest("The message is empty.")


async def _admit(user: Any, *, quota: bool = True) -> None:
    """Refusals that cost nothing: process draining, send rate, daily quota."""
    if not get_worker().accepting:
        raise Unavailable(
            "This server is restarting. Your message was not sent; please resend it."
        )
    retry = await get_store().rate_hit(
        f"send:{user.pk}", settings.CHAT_RATE_LIMIT_PER_MINUTE, 60
    )
    if retry:
        raise RateLimited(
            f"You are sending messages too fast. Try again in {retry} seconds.",
            retry_after=retry,
        )
    if quota:
        await db_async(quota_check)(user=user)


@contextlib.asynccontextmanager
async def _turn_mutex(dialogue_id: int | None) -> AsyncIterator[None]:
    """Serialise check-and-insert per dialogue across processes. Whether a reply is in
    flight is the database's answer (a `streaming` row, which the reaper ends if its
    process dies); this lock only lives for the insert, so nothing can leave it stuck."""
    if dialogue_id is None:
        yield
        return
    store = get_store()
    key, token = dialogue_lock(dialogue_id), uuid.uuid4().hex
    if not await store.lock(key, token, MUTEX_SECONDS):
        raise Busy()
    try:
        yield
    finally:
        await store.unlock(key, token)


def _store_turn(
    *,
    user: Any,
    dialogue: Dialogue | None,
    content: str,
    client_id: str,
    spec: ModelSpec,
    image: dict[str, Any] | None,
    replace_from: int | None = None,
) -> Turn:
    """One transaction: the dialogue (if new), the user message, the pending reply."""
    with transaction.atomic():
        created = dialogue is None
        if dialogue is None:
            dialogue = Dialogue.objects.create(owner=user, model=spec.name)
        if replace_from is not None:
            Message.objects.filter(dialogue=dialogue, id__gte=replace_from).update(
                replaced=True
            )
        message = Message(
            dialogue=dialogue,
            user=user,
            role=Message.Role.USER,
            content=content,
            client_id=client_id,
            created_dialogue=created,
            model=spec.name,
        )
        reply, picture = _pending_reply(
            dialogue=dialogue, spec=spec, image=image, after=message, new=created
        )
    return Turn(dialogue, message, reply, picture, created_dialogue=created)


def _claim(dialogue: Dialogue) -> None:
    """The busy check and the activity bump in one statement: a dialogue whose reply
    is still streaming is left alone and the turn refused."""
    dialogues = connection.ops.quote_name(Dialogue._meta.db_table)
    messages = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {dialogues} SET last_activity_at = %s WHERE id = %s AND NOT EXISTS "  # noqa: S608
            f"(SELECT 1 FROM {messages} m WHERE m.dialogue_id = %s AND m.status = %s)",
            [timezone.now(), dialogue.pk, dialogue.pk, Message.Status.STREAMING],
        )
        if cursor.rowcount != 1:
            raise Busy()


def _pending_reply(
    *,
    dialogue: Dialogue,
    spec: ModelSpec,
    image: dict[str, Any] | None,
    after: Message | None = None,
    new: bool = False,
) -> tuple[Message, Any]:
    """The writes every turn shares, in a transaction of the caller: the busy check
    with the dialogue's activity bump (`Busy`; not for a `new` dialogue), the
    `streaming` reply row (inserted with `after`, the user message, in one
    statement), and the pending picture of an image request."""
    if not new:
        _claim(dialogue)
    reply = Message(
        dialogue=dialogue,
        user_id=dialogue.owner_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=spec.name,
        worker=get_worker().id,
    )
    Message.objects.bulk_create([m for m in (after, reply) if m is not None])
    picture = None
    if image is not None:
        picture = image_create_pending(
            message=reply, prompt=image["prompt"], size=image.get("size")
        )
    return reply, picture


def _send_prepare(
    *, user: Any, dialogue_id: int | None, client_id: str, replace_last: bool
) -> tuple[Message | None, Dialogue | None, int | None]:
    """The reads of a send in one database call: (the message already stored under
    this `client_id`, or the dialogue, the first message an edit replaces), after the
    daily quota."""
    dup_id, dialogue, quota = selectors.send_context(
        user=user, dialogue_id=dialogue_id, client_id=client_id
    )
    if dup_id is not None:
        # A resend: the full message (rare) is read only then.
        existing = selectors.message_find_by_client_id(user=user, client_id=client_id)
        if existing is not None:
            return existing, None, None
    replace_from = None
    if replace_last:
        if dialogue is None:
            raise BadRequest("Nothing to edit in a new dialogue.")
        last = selectors.message_last_user(dialogue=dialogue)
        if last is None:
            raise MessageNotFound("There is no message to edit in this dialogue.")
        replace_from = last.pk
    quota_check(user=user, override=quota)
    return None, dialogue, replace_from


@_gated
async def message_send(
    *,
    user: Any,
    dialogue_id: int | None,
    content: str,
    client_id: str,
    model: str | None = None,
    image_size: str | None = None,
    force_image: bool = False,
    replace_last: bool = False,
) -> Turn:
    """Store a user message (or an image request) and its pending reply.

    A `client_id` already used by this user stores nothing and returns the stored turn
    with `duplicate=True` (protocol guarantee 4).
    """
    _check_length(content)
    existing, dialogue, replace_from = await db_async(_send_prepare)(
        user=user,
        dialogue_id=dialogue_id,
        client_id=client_id,
        replace_last=replace_last,
    )
    if existing is not None:
        return Turn(
            existing.dialogue,
            existing,
            created_dialogue=existing.created_dialogue,
            duplicate=True,
        )
    prompt = content.strip() if force_image else image_prompt(content)
    if force_image:
        content = f"/image {prompt}"
    spec = resolve_model(model or (dialogue.model if dialogue else None))
    await _admit(user, quota=False)  # checked by _send_prepare
    try:
        async with _turn_mutex(dialogue.pk if dialogue else None):
            return await db_async(_store_turn)(
                user=user,
                dialogue=dialogue,
                content=content,
                client_id=client_id,
                spec=spec,
                image={"prompt": prompt, "size": image_size}
                if prompt is not None
                else None,
                replace_from=replace_from,
            )
    except IntegrityError:
        # The same client_id raced in from another socket: the first one won.
        existing = await db_async(selectors.message_find_by_client_id)(
            user=user, client_id=client_id
        )
        if existing is None:
            raise
        return Turn(
            existing.dialogue,
            existing,
            created_dialogue=existing.created_dialogue,
            duplicate=True,
        )


@_gated
async def reply_regenerate(*, user: Any, dialogue_id: Any) -> Turn:
    """Answer the last user message again; earlier answers to it stay, marked replaced."""
    dialogue = await db_async(selectors.dialogue_get_for_user)(
        dialogue_id=dialogue_id, user=user
    )
    last = await db_async(selectors.message_last_user)(dialogue=dialogue)
    if last is None:
        raise MessageNotFound("There is no message to answer in this dialogue.")
    await _admit(user)
    spec = resolve_model(dialogue.model)

    def store() -> Turn:
        with transaction.atomic():
            Message.objects.filter(dialogue=dialogue, id__gt=last.pk).update(
                replaced=True
            )
            prompt = image_prompt(last.content)
            reply, picture = _pending_reply(
                dialogue=dialogue,
                spec=spec,
                image={"prompt": prompt} if prompt is not None else None,
            )
        return Turn(dialogue, None, reply, picture)

    async with _turn_mutex(dialogue.pk):
        return await db_async(store)()


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
                "message": message_dict(turn.message, images=[]),
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
    except Exception:
        log.exception("reply %s failed", reply.pk)
        await _fail_if_streaming(reply)
    finally:
        await _release(turn)


async def _fail_if_streaming(reply: Message) -> None:
    """Never leave a reply `streaming` after its task ended by an error."""
    try:
        await db_async(
            Message.objects.filter(pk=reply.pk, status=Message.Status.STREAMING).update
        )(
            status=Message.Status.FAILED,
            error_code="internal",
            error_message="The reply could not be completed because of a server error. "
            "The text written so far was kept; you can regenerate it.",
            worker="",
            updated_at=timezone.now(),
        )
    except Exception:
        log.exception("could not mark reply %s failed", reply.pk)


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
            image = await db_async(image_create_pending)(
                message=reply, prompt=prompt, size=size
            )
        except (BadRequest, TooLong) as exc:
            yield f"The image could not be requested: {exc.message}"
            return
        yield await _image_event("image.started", reply)
        image = await image_render(image=image)
        ok = image.status == "complete"
        yield await _image_event("image.completed" if ok else "image.failed", reply)
        yield image_tool_result(image)

    return [image_tool_schema()], handler


@db_async
def _reload(message: Message) -> Message:
    return Message.objects.prefetch_related("images").get(pk=message.pk)


async def _image_event(kind: str, message: Message) -> dict[str, Any]:
    fresh = await _reload(message)
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
                if ok:
                    usage_record_image(user=reply.user)

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


async def dialogue_open(
    *, user: Any, dialogue_id: Any, subscribe: Callable[[int], Awaitable[None]]
) -> tuple[dict[str, Any], dict[int, int]]:
    """The `dialogue.state` event and, per reply in flight, the seq its text includes.

    `subscribe` runs once the dialogue is known to be the user's and before anything is
    read, so every delta after the state is delivered: no gap (guarantee 2).
    """
    from .workers import replies_reap

    dialogue = await db_async(selectors.dialogue_get_for_user)(
        dialogue_id=dialogue_id, user=user
    )
    await subscribe(dialogue.pk)
    messages, has_more = await db_async(selectors.message_page)(dialogue=dialogue)
    floors: dict[int, int] = {}
    store = get_store()
    for i, message in enumerate(messages):
        if message.status != Message.Status.STREAMING:
            continue
        snap = await store.snapshot(message.pk)
        if snap is None or snap.done:
            # Finished since the page was read, or no live state: its process may be
            # gone (reap it now) or a reaper got there first. The row is the truth.
            message = messages[i] = await _reload(message)
            if message.status == Message.Status.STREAMING and await replies_reap(
                worker=get_worker(), only=[message.pk]
            ):
                message = messages[i] = await _reload(message)
        else:
            message.content, message.seq = snap.text, snap.seq
        floors[message.pk] = message.seq
    return {
        "type": "dialogue.state",
        "dialogue": dialogue_dict(dialogue),
        "messages": [message_dict(m) for m in messages],
        "has_more": has_more,
    }, floors


async def dialogue_history(
    *, user: Any, dialogue_id: Any, before: Any
) -> dict[str, Any]:
    if not isinstance(before, int) or isinstance(before, bool):
        raise BadRequest("`before` must be a message id (an integer).")
    dialogue = await db_async(selectors.dialogue_get_for_user)(
        dialogue_id=dialogue_id, user=user
    )
    messages, has_more = await db_async(selectors.message_page)(
        dialogue=dialogue, before=before
    )
    return {
        "type": "dialogue.history",
        "dialogue": dialogue.pk,
        "messages": [message_dict(m) for m in messages],
        "has_more": has_more,
    }


@db_async
def _streaming_reply_id(dialogue: Dialogue) -> int | None:
    return (
        Message.objects.filter(dialogue=dialogue, status=Message.Status.STREAMING)
        .values_list("id", flat=True)
        .first()
    )


async def reply_stop(*, user: Any, dialogue_id: Any, seq: int | None) -> bool:
    """Stop the reply in flight in the dialogue (on whichever process); False if none."""
    dialogue = await db_async(selectors.dialogue_get_for_user)(
        dialogue_id=dialogue_id, user=user
    )
    message_id = await _streaming_reply_id(dialogue)
    if message_id is None:
        return False
    return await get_worker().stop_reply(message_id, seq)
