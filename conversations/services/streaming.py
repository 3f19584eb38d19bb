"""The reply stream: model chunks in, coalesced protocol events out.

`reply_stream` is an async generator that knows nothing of websockets: it yields
`reply.delta` events at most once per window and a final `reply.completed`,
`reply.stopped` or `reply.failed`, writing the message only at checkpoints and once at
the end. `reply_run` drives it inside a task of this process (`Worker`), publishing
each event to the dialogue's group and the text so far to the live store so any
process can resume a socket exactly.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from ..asyncdb import db_async
from ..exceptions import LLMError
from ..llm import ChatLLM, LLMChunk
from ..models import Message
from ..serializers import message_dict
from ..tokens import count_tokens
from .usage import usage_record

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 2
HOLD = 0.75  # of the window: how long a lone text may wait for the next one
CREDIT_CAP = 1.5  # frames of credit a stream can bank: a late frame is caught up
INTERRUPTED_MESSAGE = (
    "The server stopped while writing this reply. The text written so far was kept; "
    "you can regenerate it."
)


@dataclass(slots=True)
class _Stop:
    seq: int | None
    interrupt: bool = False


_END = object()


class Mailbox:
    """What reaches a reply while it streams: model chunks, its end, a stop.

    Cheaper than a queue per chunk (the hot path: a put per token), and the reply can
    wait for a deadline or for something urgent only, without a task per wait. It also
    keeps the timing the coalescing needs: when the oldest waiting text arrived and
    the usual gap between texts (a moving average)."""

    __slots__ = ("items", "urgent", "oldest", "last", "gap", "_waiter", "_chunks_wake")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.urgent = False
        self.oldest: float | None = None  # loop time the first waiting text arrived
        self.last: float | None = None
        self.gap: float | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._chunks_wake = True

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        text = type(item) is LLMChunk and item.text
        if text:
            now = asyncio.get_running_loop().time()
            if self.oldest is None:
                self.oldest = now
            if self.last is not None:
                gap = now - self.last
                self.gap = gap if self.gap is None else 0.8 * self.gap + 0.2 * gap
            self.last = now
        else:
            self.urgent = self.urgent or type(item) is not LLMChunk
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and (self.urgent or (text and self._chunks_wake))
        ):
            waiter.set_result(None)

    def take(self) -> list[Any]:
        items, self.items, self.urgent = self.items, [], False
        return items

    async def wait(self, deadline: float | None, *, chunks_wake: bool) -> None:
        """Until an item arrives (with `chunks_wake` False: until something other than
        a chunk does) or the loop time `deadline` passes."""
        if self.urgent or (chunks_wake and self.items):
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._chunks_wake = chunks_wake
        handle = loop.call_at(deadline, _wake, waiter) if deadline is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass
class ReplyControl:
    """The handle a stop or a shutdown uses to end a reply in flight."""

    queue: Mailbox = field(default_factory=Mailbox)

    def stop(self, seq: int | None = None) -> None:
        self.queue.put_nowait(_Stop(seq))

    def interrupt(self) -> None:
        self.queue.put_nowait(_Stop(None, interrupt=True))


ToolHandler = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any] | str]]


async def _pump(source: AsyncIterator[LLMChunk], queue: Mailbox) -> None:
    try:
        async for chunk in source:
            queue.put_nowait(chunk)
    except LLMError as exc:
        queue.put_nowait(exc)
    except Exception as exc:  # a gateway bug must end the reply, not hang it
        log.exception("model stream crashed")
        queue.put_nowait(
            LLMError(
                f"The model stream failed unexpectedly ({type(exc).__name__}).",
                code="internal",
            )
        )
    else:
        queue.put_nowait(_END)


def _checkpoint_many(batch: dict[int, tuple[str, int]]) -> None:
    """One UPDATE for every stream of the process that is due, in plain SQL (the
    ORM's bulk_update builds a CASE per row and field: more CPU than the write). A
    reply that ended meanwhile keeps its final text."""
    table = connection.ops.quote_name(Message._meta.db_table)
    now = timezone.now()
    streaming = Message.Status.STREAMING
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            values = ", ".join(["(%s::bigint, %s::text, %s::integer)"] * len(batch))
            params: list[Any] = [x for pk, (t, q) in batch.items() for x in (pk, t, q)]
            cursor.execute(
                f"UPDATE {table} AS m SET content = v.content, seq = v.seq, "  # noqa: S608
                f"updated_at = %s FROM (VALUES {values}) AS v(id, content, seq) "
                "WHERE m.id = v.id AND m.status = %s",
                [now, *params, streaming],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET content = %s, seq = %s, updated_at = %s "  # noqa: S608
                "WHERE id = %s AND status = %s",
                [(t, q, now, pk, streaming) for pk, (t, q) in batch.items()],
            )


class Checkpoints:
    """The text so far of this process's replies, each written about once a second
    (never sooner than `CHAT_CHECKPOINT_SECONDS` after its last write), all that are
    due in one statement rather than one per stream."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[str, int]] = {}
        self.due: dict[int, float] = {}
        self.task: asyncio.Task[None] | None = None

    def put(self, message_id: int, text: str, seq: int) -> None:
        self.pending[message_id] = (text, seq)
        if message_id not in self.due:
            loop = asyncio.get_running_loop()
            self.due[message_id] = loop.time() + settings.CHAT_CHECKPOINT_SECONDS
            if self.task is None or self.task.done():
                self.task = loop.create_task(self._run())

    def drop(self, message_id: int) -> None:
        self.pending.pop(message_id, None)
        self.due.pop(message_id, None)

    async def _run(self) -> None:
        every = settings.CHAT_CHECKPOINT_SECONDS
        loop = asyncio.get_running_loop()
        while self.due:
            await asyncio.sleep(every / 4)
            now = loop.time()
            batch = {
                message_id: self.pending.pop(message_id)
                for message_id, when in self.due.items()
                if when <= now and message_id in self.pending
            }
            if not batch:
                continue
            for message_id in batch:
                self.due[message_id] = now + every
            try:
                await db_async(_checkpoint_many)(batch)
            except DatabaseError:
                log.warning(
                    "checkpoint of %d replies failed", len(batch), exc_info=True
                )


_checkpoints: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Checkpoints] = (
    weakref.WeakKeyDictionary()
)


def get_checkpoints() -> Checkpoints:
    loop = asyncio.get_running_loop()
    checkpoints = _checkpoints.get(loop)
    if checkpoints is None:
        checkpoints = _checkpoints[loop] = Checkpoints()
    return checkpoints


def _finish_sync(
    message: Message, fields: dict[str, Any], with_images: bool = False
) -> Message:
    """The final state in one UPDATE plus the day's usage, in one transaction; the
    reply is not read back unless another ending won (or a tool added pictures)."""
    if fields.get("completion_tokens") is None:
        # No usage from the provider: count the completion with the model's tokenizer.
        fields["completion_tokens"] = count_tokens(
            fields.get("content", ""), model=message.model
        )
    now = timezone.now()
    with transaction.atomic():
        # Only a reply still streaming is finished: a reaper or a shutdown may have
        # ended it already, and the first ending wins.
        updated = Message.objects.filter(
            pk=message.pk, status=Message.Status.STREAMING
        ).update(**fields, worker="", updated_at=now)
        if not updated:
            return Message.objects.prefetch_related("images").get(pk=message.pk)
        saved = copy.copy(message)
        for name, value in fields.items():
            setattr(saved, name, value)
        saved.worker, saved.updated_at = "", now
        usage_record(message=saved)
    if with_images:
        prefetch_related_objects([saved], "images")
    return saved


async def _finish(
    message: Message, fields: dict[str, Any], with_images: bool = False
) -> Message:
    """Save the final state, retrying a failing database for a while: a finished
    reply must not be silently truncated to its last checkpoint."""
    delay = 0.25
    deadline = time.monotonic() + settings.CHAT_FINAL_SAVE_RETRY_SECONDS
    while True:
        try:
            return await db_async(_finish_sync)(message, fields, with_images)
        except DatabaseError:
            if time.monotonic() >= deadline:
                raise
            log.warning(
                "final save of message %s failed; retrying in %.2fs", message.pk, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)


async def reply_stream(
    *,
    message: Message,
    llm: ChatLLM,
    messages: list[dict[str, Any]],
    control: ReplyControl,
    tools: list[dict[str, Any]] | None = None,
    tool_handler: ToolHandler | None = None,
    prompt_tokens: int | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the events of one assistant reply; `message` is the stored, streaming row."""
    # Coalescing: at most one frame per window on average (a credit that refills at
    # 1/window per second; frames - 1 <= elapsed / window), the first text at once, and a waiting text sent
    # as soon as credit allows, except when texts arrive faster than the hold time:
    # then a lone text waits (up to HOLD of the window) for the next, so at e.g. 50
    # tokens/s and 40 ms every frame carries two tokens sent the moment the second
    # arrives (delays 20 and 0 ms) rather than one late each time.
    window = settings.CHAT_DELTA_WINDOW_MS / 1000
    rate, hold = 1 / window, HOLD * window
    loop = asyncio.get_running_loop()
    checkpoints = get_checkpoints()
    queue = control.queue
    dialogue_id = message.dialogue_id
    text = message.content
    seq = message.seq
    offsets = {seq: len(text)}  # seq -> length of the text once that delta is applied
    usage: dict[str, int] = {}
    tool_calls: list[dict[str, Any]] = []
    rounds = 0
    pump = asyncio.create_task(
        _pump(llm.stream(model=message.model, messages=messages, tools=tools), queue)
    )
    status: str | None = None
    error: LLMError | None = None
    stop_seq: int | None = None
    parts: list[str] = []
    credit, credit_at = 1.0, loop.time()  # the first text goes out at once
    try:
        while status is None:
            if parts:
                now = loop.time()
                have = min(CREDIT_CAP, credit + (now - credit_at) * rate)
                if have < 1:
                    # No frame is possible before then: only an ending wakes earlier.
                    await queue.wait(now + (1 - have) / rate, chunks_wake=False)
                else:
                    assert queue.oldest is not None
                    await queue.wait(queue.oldest + hold, chunks_wake=True)
            else:
                await queue.wait(None, chunks_wake=True)
            for item in queue.take():
                if type(item) is LLMChunk:
                    if item.text:
                        parts.append(item.text)
                    if item.usage:
                        for key in ("prompt_tokens", "completion_tokens"):
                            usage[key] = usage.get(key, 0) + int(
                                item.usage.get(key) or 0
                            )
                    if item.tool_calls:
                        tool_calls = item.tool_calls
                elif item is _END:
                    status = Message.Status.COMPLETE
                elif isinstance(item, LLMError):
                    status, error = Message.Status.FAILED, item
                elif isinstance(item, _Stop):
                    status = (
                        Message.Status.INTERRUPTED
                        if item.interrupt
                        else Message.Status.STOPPED
                    )
                    stop_seq = item.seq
                    break
            if parts:
                now = loop.time()
                have = min(CREDIT_CAP, credit + (now - credit_at) * rate)
                if status is None and (
                    have < 1
                    or (
                        len(parts) < 2
                        and queue.gap is not None
                        and queue.gap < hold
                        and now - (queue.oldest or now) < hold
                    )
                ):
                    continue  # wait for credit, or for the next text to pair with
                if have < 1 and status != Message.Status.STOPPED:
                    # The last text waits for credit too (at most a window): the cap
                    # holds to the end of the reply.
                    await asyncio.sleep((1 - have) / rate)
                    now, have = loop.time(), 1.0
                credit, credit_at = have - 1, now
                queue.oldest = None
                delta = "".join(parts)
                parts = []
                seq += 1
                text += delta
                offsets[seq] = len(text)
                checkpoints.put(message.pk, text, seq)
                yield {
                    "type": "reply.delta",
                    "dialogue": dialogue_id,
                    "message_id": message.pk,
                    "seq": seq,
                    "delta": delta,
                }
            if (
                status == Message.Status.COMPLETE
                and tool_calls
                and tool_handler
                and rounds < MAX_TOOL_ROUNDS
            ):
                # The model asked for tools: run them, then let it continue the reply.
                rounds += 1
                results = []
                for call in tool_calls:
                    result = "The tool is not available."
                    async for event in tool_handler(call):
                        if isinstance(event, str):
                            result = event
                        else:
                            yield event
                    results.append(
                        {"role": "tool", "tool_call_id": call["id"], "content": result}
                    )
                messages = [
                    *messages,
                    {
                        "role": "assistant",
                        "content": text or None,
                        "tool_calls": [
                            {
                                "id": c["id"],
                                "type": "function",
                                "function": {
                                    "name": c["name"],
                                    "arguments": c["arguments"],
                                },
                            }
                            for c in tool_calls
                        ],
                    },
                    *results,
                ]
                tool_calls, status = [], None
                pump = asyncio.create_task(
                    _pump(
                        llm.stream(model=message.model, messages=messages, tools=tools),
                        queue,
                    )
                )
                continue
    finally:
        checkpoints.drop(message.pk)
        if not pump.done():
            # Closing the HTTP response here is what stops the provider generating
            # (and billing) tokens: protocol guarantee 5.
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    if (
        status in (Message.Status.STOPPED, Message.Status.INTERRUPTED)
        and stop_seq is not None
    ):
        seq = max(message.seq, min(stop_seq, seq))
        text = text[: offsets[seq]]
    fields: dict[str, Any] = {"content": text, "seq": seq, "status": status}
    if usage:
        fields["prompt_tokens"] = usage.get("prompt_tokens")
        fields["completion_tokens"] = usage.get("completion_tokens")
    elif prompt_tokens is not None:
        # No usage from the provider: the context's own count stands in (the
        # completion is counted by usage_record).
        fields["prompt_tokens"] = prompt_tokens
    if error is not None:
        fields["error_code"], fields["error_message"] = error.code, error.message
    elif status == Message.Status.INTERRUPTED:
        fields["error_code"], fields["error_message"] = (
            "interrupted",
            INTERRUPTED_MESSAGE,
        )
    saved = await _finish(message, fields, with_images=rounds > 0)
    kind = {
        Message.Status.COMPLETE: "reply.completed",
        Message.Status.STOPPED: "reply.stopped",
    }.get(saved.status, "reply.failed")
    yield {"type": kind, "dialogue": dialogue_id, "message": message_dict(saved)}


Publisher = Callable[[dict[str, Any]], Awaitable[None]]
