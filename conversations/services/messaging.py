"""Use cases of the chat socket: send, open, history, stop, regenerate, edit, images.

Each validates and stores; a stored turn is then produced by the reply runner
(services/replies.py). Nothing refused here ever reaches the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from attachments.services import (
    attachment_ids_of,
    attachments_attach,
    attachments_check_model,
    attachments_for_send,
)
from imaging.services import (
    image_create_pending,
    image_prompt_from_text,
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
from ..models import Dialogue, Message
from ..realtime import get_store, snapshot
from ..serializers import dialogue_dict, message_dict, with_images
from .usage import quota_check, quota_reserve
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
    # The files the user message carries (attachments/), as stored.
    attachments: list[Any] = field(default_factory=list)
    # `reply` is an existing message the model goes on writing (reply.continue).
    continuing: bool = False


def _check_length(content: str, *, files: bool = False) -> None:
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(content) > limit:
        raise TooLong(
            f"The message is {len(content):,} characters long; the limit is {limit:,}."
        )
    if not content.strip() and not files:
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
    parent_id: int | None = None,
    quota: dict[str, Any] | None = None,
    files: list[Any] | None = None,
) -> Turn:
    """One transaction: the dialogue (if new), the user message (a child of
    `parent_id`), the pending reply (counted against the day's quota: `quota` is
    the user's override, if read), the message's attachments."""
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
            parent_id=None if created else parent_id,
        )
        reply, picture = _pending_reply(
            dialogue=dialogue,
            spec=spec,
            image=image,
            after=message,
            new=created,
            quota=quota,
        )
        stored = attachments_attach(message=message, attachments=files or [])
    return Turn(
        dialogue, message, reply, picture, created_dialogue=created, attachments=stored
    )


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
    parent_id: int | None = None,
    quota: dict[str, Any] | None = None,
) -> tuple[Message, Any]:
    """The writes every turn shares, in a transaction of the caller: the busy check
    with the dialogue's activity bump (`Busy`; not for a `new` dialogue), the turn
    counted against the day's quota (`QuotaExceeded`: concurrent sends queue on
    the day's usage row), the `streaming` reply row (inserted with `after`, the
    user message, in one statement), and the pending picture of an image request."""
    if not new:
        _claim(dialogue)
    quota_reserve(user_id=dialogue.owner_id, image=image is not None, override=quota)
    reply = Message(
        dialogue=dialogue,
        user_id=dialogue.owner_id,
        role=Message.Role.ASSISTANT,
        status=Message.Status.STREAMING,
        model=spec.name,
        worker=get_worker().id,
        parent_id=parent_id,
    )
    Message.objects.bulk_create([m for m in (after, reply) if m is not None])
    if after is not None:
        # Its parent's id exists only now: one insert for both rows, then the link.
        reply.parent_id = after.pk
        Message.objects.filter(pk=reply.pk).update(parent_id=after.pk)
    picture = None
    if image is not None:
        picture = image_create_pending(
            message=reply, prompt=image["prompt"], size=image.get("size")
        )
    return reply, picture


def _send_prepare(
    *, user: Any, dialogue_id: int | None, client_id: str, replace_last: bool
) -> tuple[Message | None, Dialogue | None, int | None, int | None, dict[str, Any]]:
    """The reads of a send in one database call: (the message already stored under
    this `client_id`, or the dialogue, the first message an edit replaces, the parent
    of the new message), after the daily quota. A send continues the shown branch;
    an edit makes a sibling of the message it edits."""
    dup_id, dialogue, quota = selectors.send_context(
        user=user, dialogue_id=dialogue_id, client_id=client_id
    )
    if dup_id is not None:
        # A resend: the full message (rare) is read only then.
        existing = selectors.message_find_by_client_id(user=user, client_id=client_id)
        if existing is not None:
            return existing, None, None, None, quota
    replace_from = None
    parent_id = getattr(dialogue, "send_leaf", None)
    if replace_last:
        if dialogue is None:
            raise BadRequest("Nothing to edit in a new dialogue.")
        last = selectors.message_last_user(dialogue=dialogue)
        if last is None:
            raise MessageNotFound("There is no message to edit in this dialogue.")
        replace_from, parent_id = last.pk, last.parent_id
    quota_check(user=user, override=quota)
    return None, dialogue, replace_from, parent_id, quota


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
    attachments: list[int] | None = None,
) -> Turn:
    """Store a user message (or an image request) and its pending reply.

    `attachments`: ids of the user's uploads to send with it; for an edit, None keeps
    the edited message's files. A `client_id` already used by this user stores nothing
    and returns the stored turn with `duplicate=True` (protocol guarantee 4).
    """
    _check_length(content, files=bool(attachments) or replace_last)
    existing, dialogue, replace_from, parent_id, quota = await db_async(_send_prepare)(
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
    prompt = content.strip() if force_image else image_prompt_from_text(content)
    if force_image:
        content = f"/image {prompt}"
    spec = resolve_model(model or (dialogue.model if dialogue else None))
    files = await db_async(_send_files)(
        user=user,
        ids=attachments,
        dialogue=dialogue,
        spec=spec,
        carry_from=replace_from,
    )
    if not content.strip() and not files:
        raise BadRequest("The message is empty.")
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
                parent_id=parent_id,
                quota=quota,
                files=files,
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


def _send_files(
    *,
    user: Any,
    ids: list[int] | None,
    dialogue: Dialogue | None,
    spec: ModelSpec,
    carry_from: int | None,
) -> list[Any]:
    """The attachments a send names, checked (owner, unsent or of this dialogue,
    per-message limits, pictures only for a vision model). An edit without
    `attachments` carries the edited message's."""
    if ids is None and carry_from is not None:
        ids = attachment_ids_of(message=carry_from)
    if not ids:
        return []
    files = attachments_for_send(
        user=user, ids=ids, dialogue_id=dialogue.pk if dialogue else None
    )
    attachments_check_model(attachments=files, spec=spec)
    return files


@_gated
async def reply_regenerate(*, user: Any, dialogue_id: Any) -> Turn:
    """Answer the last user message again: a sibling of the earlier answers, which
    stay, off the shown branch (marked replaced)."""
    dialogue = await db_async(selectors.dialogue_get_for_user)(
        dialogue_id=dialogue_id, user=user
    )
    last = await db_async(selectors.message_last_user)(dialogue=dialogue)
    if last is None:
        raise MessageNotFound("There is no message to answer in this dialogue.")
    await _admit(user)
    spec = resolve_model(dialogue.model)
    # The turn's pictures need a model that sees them (the dialogue's may have changed).
    await db_async(_send_files)(
        user=user, ids=None, dialogue=dialogue, spec=spec, carry_from=last.pk
    )

    def store() -> Turn:
        with transaction.atomic():
            Message.objects.filter(dialogue=dialogue, id__gt=last.pk).update(
                replaced=True
            )
            prompt = image_prompt_from_text(last.content)
            reply, picture = _pending_reply(
                dialogue=dialogue,
                spec=spec,
                image={"prompt": prompt} if prompt is not None else None,
                parent_id=last.pk,
            )
        return Turn(dialogue, None, reply, picture)

    async with _turn_mutex(dialogue.pk):
        return await db_async(store)()


CONTINUABLE = (
    Message.Status.FAILED,
    Message.Status.STOPPED,
    Message.Status.INTERRUPTED,
)


@_gated
async def reply_continue(*, user: Any, dialogue_id: Any) -> Turn:
    """Let the model go on writing the dialogue's last reply, into the same message:
    one cut off at its token limit, or one that failed, was stopped or interrupted
    with some text kept. The message is `streaming` again when this returns."""
    dialogue = await db_async(selectors.dialogue_get_for_user)(
        dialogue_id=dialogue_id, user=user
    )
    await _admit(user)

    def store() -> Turn:
        with transaction.atomic():
            last = (
                Message.objects.filter(dialogue=dialogue, replaced=False)
                .order_by("-id")
                .first()
            )
            if (
                last is None
                or last.role != Message.Role.ASSISTANT
                or not last.content.strip()
                or not (
                    last.status in CONTINUABLE
                    or (last.status == Message.Status.COMPLETE and last.cut_off)
                )
            ):
                raise BadRequest(
                    "There is no cut-off or unfinished reply to continue here."
                )
            _claim(dialogue)
            fields: dict[str, Any] = {
                "status": Message.Status.STREAMING,
                "worker": get_worker().id,
                "error_code": "",
                "error_message": "",
                "cut_off": False,
            }
            Message.objects.filter(pk=last.pk).update(
                **fields, updated_at=timezone.now()
            )
            for name, value in fields.items():
                setattr(last, name, value)
        return Turn(dialogue, None, last, continuing=True)

    async with _turn_mutex(dialogue.pk):
        return await db_async(store)()


@db_async
def message_reload(message: Message) -> Message:
    """The message as stored now, with its pictures."""
    return Message.objects.prefetch_related(with_images()).get(pk=message.pk)


@db_async
def message_still_streaming(message: Message) -> bool:
    return Message.objects.filter(
        pk=message.pk, status=Message.Status.STREAMING
    ).exists()


_read_gates: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakValueDictionary[int, asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


def _user_gate(user: Any) -> asyncio.Semaphore:
    """At most CHAT_USER_READS socket reads of one user at once in this process: a
    user opening dialogues on thousands of sockets queues behind their own reads,
    and the database threads stay free for everyone else's work. (A socket itself
    handles one frame at a time.) Gates live while someone holds or awaits them."""
    loop = asyncio.get_running_loop()
    gates = _read_gates.get(loop)
    if gates is None:
        gates = _read_gates[loop] = weakref.WeakValueDictionary()
    gate = gates.get(user.pk)
    if gate is None:
        gate = gates[user.pk] = asyncio.Semaphore(settings.CHAT_USER_READS)
    return gate


async def dialogue_open(
    *, user: Any, dialogue_id: Any, subscribe: Callable[[int], Awaitable[None]]
) -> tuple[dict[str, Any], dict[int, int]]:
    async with _user_gate(user):
        return await _dialogue_open(
            user=user, dialogue_id=dialogue_id, subscribe=subscribe
        )


async def _dialogue_open(
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
    for i, message in enumerate(messages):
        if message.status != Message.Status.STREAMING:
            continue
        try:
            snap = await snapshot(message.pk)
        except Exception:  # a damaged or unreachable live state: the row stands
            log.warning("no live state for message %s", message.pk, exc_info=True)
            snap = None
        if snap is None or snap.done:
            # Finished since the page was read, or no live state: its process may be
            # gone (reap it now) or a reaper got there first. The row is the truth.
            if await message_still_streaming(message):
                # A reaper (this one or another process's) may end it meanwhile:
                # whoever did, the row read after reaping is the truth.
                await replies_reap(worker=get_worker(), only=[message.pk])
            message = messages[i] = await message_reload(message)
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
    async with _user_gate(user):
        return await _dialogue_history(
            user=user, dialogue_id=dialogue_id, before=before
        )


async def _dialogue_history(
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
