"""The reply stream: model chunks in, coalesced protocol events out.

`reply_stream` is an async generator that knows nothing of websockets: it yields
`reply.delta` events at most once per window and a final `reply.completed`,
`reply.stopped` or `reply.failed`, writing the message only at checkpoints and once at
the end. When the text goes out is the `Coalescer`'s (services/coalescing.py) to say;
this loop only waits for what it asks. `reply_run` (services/replies.py) drives it in
a task of this process's `Worker`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone

from .. import serializers
from ..asyncdb import db_async
from ..exceptions import ContextLengthExceeded, LLMError, UpstreamIncomplete
from ..llm import ChatLLM, LLMChunk
from ..models import Message
from ..serializers import message_dict
from ..tokens import count_tokens
from .coalescing import Coalescer
from .usage import Reservation, usage_record

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 2
# The longest delta sent as one frame: even escaped as JSON (at most 12 bytes a
# character, a non-BMP one as two \uXXXX) a frame stays below the 1 MiB that
# websocket clients (and daphne, for what it receives) commonly allow.
MAX_DELTA_CHARS = 64 * 1024
# What the database and UTF-8 cannot hold: NUL, and UTF-16 surrogates on their own.
_UNSAFE = re.compile("[\x00\ud800-\udfff]")
EMPTY_MESSAGE = (
    "The model finished without writing anything. Try again, or rephrase the message."
)
INTERRUPTED_MESSAGE = (
    "The server stopped while writing this reply. The text written so far was kept; "
    "you can regenerate it."
)


def clean_text(text: str) -> str:
    """Model text made safe to publish and store: NUL and lone surrogates become
    U+FFFD (a valid surrogate pair becomes its character)."""
    if _UNSAFE.search(text) is None:
        return text
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text.replace("\x00", "\ufffd")


def split_delta(delta: str) -> list[str]:
    """`delta` in pieces of at most MAX_DELTA_CHARS, each its own frame."""
    if len(delta) <= MAX_DELTA_CHARS:
        return [delta]
    return [
        delta[i : i + MAX_DELTA_CHARS] for i in range(0, len(delta), MAX_DELTA_CHARS)
    ]


class FinalSaveFailed(Exception):
    """The database refused the final state for longer than the retry window; the
    reply runner keeps the state (`fields`) until it can be saved."""

    def __init__(self, message: Message, fields: dict[str, Any]) -> None:
        super().__init__(f"final save of message {message.pk} failed")
        self.message = message
        self.fields = fields


@dataclass(slots=True)
class _Stop:
    seq: int | None
    interrupt: bool = False


_END = object()


class Mailbox:
    """What reaches a reply while it streams: model chunks, its end, a stop.

    Cheaper than a queue per chunk (the hot path: a put per token), and the reply can
    wait for a deadline, or for something other than text only, without a task per
    wait."""

    __slots__ = ("items", "urgent", "_waiter", "_texts_wake")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.urgent = False
        self._waiter: asyncio.Future[None] | None = None
        self._texts_wake = True

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        if type(item) is LLMChunk:
            wake = self._texts_wake and bool(item.text)
        else:
            self.urgent = wake = True
        waiter = self._waiter
        if wake and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[Any]:
        items, self.items, self.urgent = self.items, [], False
        return items

    async def wait(self, deadline: float | None, *, texts_wake: bool) -> None:
        """Until an item arrives (with `texts_wake` False: until something other than
        a chunk does) or the loop time `deadline` passes."""
        if self.urgent or (texts_wake and self.items):
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._texts_wake = texts_wake
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


# Given the window the server named (if it did), a smaller context and its
# max_tokens (or None).
Shrinker = Callable[
    [int | None], Awaitable[tuple[list[dict[str, Any]], int | None] | None]
]
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
    message: Message,
    fields: dict[str, Any],
    with_images: bool = False,
    reserved: Reservation | None = None,
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
            return Message.objects.prefetch_related(serializers.with_images()).get(
                pk=message.pk
            )
        saved = copy.copy(message)
        for name, value in fields.items():
            setattr(saved, name, value)
        saved.worker, saved.updated_at = "", now
        usage_record(message=saved, reserved=reserved)
    if with_images:
        prefetch_related_objects([saved], serializers.with_images())
    return saved


async def _finish(
    message: Message,
    fields: dict[str, Any],
    with_images: bool = False,
    reserved: Reservation | None = None,
) -> Message:
    """Save the final state, retrying a failing database for a while: a finished
    reply must not be silently truncated to its last checkpoint."""
    delay = 0.25
    deadline = time.monotonic() + settings.CHAT_FINAL_SAVE_RETRY_SECONDS
    while True:
        try:
            return await db_async(_finish_sync)(message, fields, with_images, reserved)
        except DatabaseError as exc:
            if time.monotonic() >= deadline:
                raise FinalSaveFailed(message, fields) from exc
            log.warning(
                "final save of message %s failed; retrying in %.2fs", message.pk, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)


class _Reply:
    """The state of one reply across its model rounds."""

    def __init__(self, message: Message, control: ReplyControl, now: float) -> None:
        self.message = message
        self.queue = control.queue
        self.coalescer = Coalescer(window=settings.CHAT_DELTA_WINDOW_MS / 1000, now=now)
        self.text = message.content
        self.seq = message.seq
        self.offsets = {self.seq: len(self.text)}  # seq -> text length after it
        self.usage: dict[str, int] = {}
        self.tool_calls: list[dict[str, Any]] = []
        self.status: str | None = None
        self.error: LLMError | None = None
        self.stop_seq: int | None = None
        self.checkpoints = get_checkpoints()
        # For the reply's own bounds: chunks of text (a token each, or more), and
        # when text (or a tool call) last came: bytes without content keep nothing
        # alive.
        self.chunks = 0
        self.last_content = now
        # Ended at its token limit: ours (max_tokens) or the server's
        # (finish_reason "length").
        self.cut_off = False

    def take(self, now: float) -> list[str]:
        """Handle what the mailbox holds; returns the frames due at `now`."""
        texts: list[str] = []
        for item in self.queue.take():
            if type(item) is LLMChunk:
                if item.text:
                    texts.append(item.text)
                    self.chunks += 1
                    self.last_content = now
                elif item.tool_calls:
                    self.last_content = now
                if item.usage:
                    for key in ("prompt_tokens", "completion_tokens"):
                        self.usage[key] = self.usage.get(key, 0) + int(
                            item.usage.get(key) or 0
                        )
                if item.tool_calls:
                    self.tool_calls = item.tool_calls
                if item.finish_reason == "length":
                    self.cut_off = True
            elif item is _END:
                self.status = Message.Status.COMPLETE
            elif isinstance(item, LLMError):
                self.status, self.error = Message.Status.FAILED, item
            elif isinstance(item, _Stop):
                self.status = (
                    Message.Status.INTERRUPTED
                    if item.interrupt
                    else Message.Status.STOPPED
                )
                self.stop_seq = item.seq
                break  # what came after the stop is not shown
        if texts:
            return self.coalescer.feed(now, clean_text("".join(texts)), len(texts))
        return self.coalescer.tick(now)

    def delta(self, delta: str) -> dict[str, Any]:
        self.seq += 1
        self.text += delta
        self.offsets[self.seq] = len(self.text)
        self.checkpoints.put(self.message.pk, self.text, self.seq)
        return {
            "type": "reply.delta",
            "dialogue": self.message.dialogue_id,
            "message_id": self.message.pk,
            "seq": self.seq,
            "delta": delta,
        }

    def final_fields(
        self, prompt_tokens: int | None, *, tools_ran: bool = False
    ) -> dict[str, Any]:
        text, seq = self.text, self.seq
        if (
            self.status == Message.Status.COMPLETE
            and not text.strip()
            and not tools_ran
        ):
            # An empty completion is not a success: the dialogue would go on with
            # a blank answer in it.
            self.status = Message.Status.FAILED
            self.error = LLMError(EMPTY_MESSAGE, code="upstream_empty")
        if (
            self.status in (Message.Status.STOPPED, Message.Status.INTERRUPTED)
            and self.stop_seq is not None
        ):
            # Stopped: keep exactly what the client displayed (guarantee 5).
            seq = max(self.message.seq, min(self.stop_seq, seq))
            text = text[: self.offsets[seq]]
        fields: dict[str, Any] = {
            "content": text,
            "seq": seq,
            "status": self.status,
            "cut_off": self.cut_off and self.status == Message.Status.COMPLETE,
            # Counted by us (usage_record and _finish_sync) when not reported.
            "usage_estimated": not self.usage,
        }
        if self.usage:
            fields["prompt_tokens"] = self.usage.get("prompt_tokens")
            fields["completion_tokens"] = self.usage.get("completion_tokens")
        elif prompt_tokens is not None:
            # No usage from the provider: the context's own count stands in (the
            # completion is counted by usage_record).
            fields["prompt_tokens"] = prompt_tokens
        if self.error is not None:
            fields["error_code"] = self.error.code
            fields["error_message"] = self.error.message
        elif self.status == Message.Status.INTERRUPTED:
            fields["error_code"] = "interrupted"
            fields["error_message"] = INTERRUPTED_MESSAGE
        return fields


def _check_bounds(reply: _Reply, now: float, ends_at: float, budget: int) -> None:
    """End a reply past its length, its duration or its silence (text kept)."""
    if reply.chunks >= budget:
        reply.status, reply.cut_off = Message.Status.COMPLETE, True
    elif now >= ends_at:
        reply.status = Message.Status.FAILED
        reply.error = LLMError(
            f"The reply took longer than {settings.CHAT_MAX_REPLY_SECONDS:g} seconds "
            "and was ended. The text written so far was kept.",
            code="reply_timeout",
        )
    elif now - reply.last_content >= settings.LLM_INACTIVITY_TIMEOUT:
        reply.status = Message.Status.FAILED
        reply.error = LLMError(
            "The model sent nothing for "
            f"{settings.LLM_INACTIVITY_TIMEOUT:g} seconds. The text written so far "
            "was kept.",
            code="upstream_timeout",
        )


def _tool_messages(
    text: str, calls: list[dict[str, Any]], results: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The assistant's tool calls and their results, for the model's next round."""
    return [
        {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        *results,
    ]


async def reply_stream(
    *,
    message: Message,
    llm: ChatLLM,
    messages: list[dict[str, Any]],
    control: ReplyControl,
    tools: list[dict[str, Any]] | None = None,
    tool_handler: ToolHandler | None = None,
    prompt_tokens: int | None = None,
    max_tokens: int | None = None,
    reserved: Reservation | None = None,
    shrink: Shrinker | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Yield the events of one assistant reply; `message` is the stored, streaming row.

    The outer loop is one model round each; the model asking for tools (at most
    MAX_TOOL_ROUNDS times, CHAT_MAX_TOOL_CALLS calls in all) runs them and starts
    another. The inner loop waits for the mailbox, the coalescer's deadline or the
    reply's own bounds, and yields the frames it gives. Whatever the provider does,
    the reply ends after `max_tokens` chunks of text (default CHAT_MAX_REPLY_TOKENS;
    each is a token or more), CHAT_MAX_REPLY_SECONDS in all, or LLM_INACTIVITY_TIMEOUT
    seconds without content. `reserved`: what the quota counted before (settled at
    the end). A server that refuses the prompt as too long before any text (or
    answers it with an empty body) is asked once more with what `shrink` gives."""
    loop = asyncio.get_running_loop()
    reply = _Reply(message, control, loop.time())
    coalescer, queue = reply.coalescer, reply.queue
    pump: asyncio.Task[None] | None = None
    rounds = tool_calls = 0
    budget = settings.CHAT_MAX_REPLY_TOKENS if max_tokens is None else max_tokens
    ends_at = loop.time() + settings.CHAT_MAX_REPLY_SECONDS
    shrunk = False
    try:
        while True:
            pump = loop.create_task(
                _pump(
                    llm.stream(
                        model=message.model,
                        messages=messages,
                        tools=tools,
                        max_tokens=max(budget - reply.chunks, 1),
                    ),
                    queue,
                )
            )
            while reply.status is None:
                # Text waiting for credit: only an ending matters before the credit
                # is there. Otherwise: the next text, or the coalescer's deadline.
                deadline, ready = coalescer.deadline(), coalescer.ready_at()
                bound = min(
                    ends_at, reply.last_content + settings.LLM_INACTIVITY_TIMEOUT
                )
                if deadline is not None and loop.time() < ready:
                    await queue.wait(min(ready, bound), texts_wake=False)
                else:
                    await queue.wait(
                        bound if deadline is None else min(deadline, bound),
                        texts_wake=True,
                    )
                for delta in reply.take(loop.time()):
                    for piece in split_delta(delta):
                        yield reply.delta(piece)
                if reply.status is None:
                    _check_bounds(reply, loop.time(), ends_at, budget)
            refused = reply.error
            if (
                (
                    isinstance(refused, ContextLengthExceeded)
                    # llama-cpp-python answers a prompt over its window with an
                    # empty body after its 200: taken as a refusal for length.
                    or (isinstance(refused, UpstreamIncomplete) and refused.empty)
                )
                and shrink is not None
                and not shrunk
                and reply.text == message.content
            ):
                # Refused for length before any text: a dialogue is never dead.
                shrunk = True
                smaller = await shrink(getattr(refused, "window", None))
                if smaller is not None:
                    messages, max_tokens = smaller
                    budget = max_tokens or budget
                    reply.status, reply.error = None, None
                    reply.last_content = loop.time()  # a new request starts
                    continue
            end = coalescer.flush(
                loop.time(), wait=reply.status != Message.Status.STOPPED
            )
            if end is not None:
                at, delta = end
                if at > loop.time():
                    # The last text waits for credit too (at most a window).
                    await asyncio.sleep(at - loop.time())
                for piece in split_delta(delta):
                    yield reply.delta(piece)
            if not (
                reply.status == Message.Status.COMPLETE
                and not reply.cut_off
                and reply.tool_calls
                and tool_handler
                and rounds < MAX_TOOL_ROUNDS
            ):
                break
            rounds += 1
            calls, results = reply.tool_calls, []
            for call in calls:
                result = "The tool is not available."
                tool_calls += 1
                if tool_calls > settings.CHAT_MAX_TOOL_CALLS:
                    result = (
                        "Refused: at most "
                        f"{settings.CHAT_MAX_TOOL_CALLS} tool calls per reply."
                    )
                else:
                    async for event in tool_handler(call):
                        if isinstance(event, str):
                            result = event
                        else:
                            yield event
                results.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": result}
                )
            messages = [*messages, *_tool_messages(reply.text, calls, results)]
            reply.tool_calls, reply.status = [], None
    finally:
        reply.checkpoints.drop(message.pk)
        if pump is not None and not pump.done():
            # Closing the HTTP response here is what stops the provider generating
            # (and billing) tokens: protocol guarantee 5.
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)

    saved = await _finish(
        message,
        reply.final_fields(prompt_tokens, tools_ran=rounds > 0),
        with_images=rounds > 0,
        reserved=reserved,
    )
    kinds: dict[str, str] = {
        Message.Status.COMPLETE: "reply.completed",
        Message.Status.STOPPED: "reply.stopped",
    }
    kind = kinds.get(saved.status, "reply.failed")
    yield {
        "type": kind,
        "dialogue": message.dialogue_id,
        "message": message_dict(saved),
    }
