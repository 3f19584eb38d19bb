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
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from ..asyncdb import db_async
from ..exceptions import LLMError
from ..llm import ChatLLM, LLMChunk
from ..models import Message
from ..serializers import message_dict
from .usage import usage_record

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 2
INTERRUPTED_MESSAGE = (
    "The server stopped while writing this reply. The text written so far was kept; "
    "you can regenerate it."
)


@dataclass(slots=True)
class _Stop:
    seq: int | None
    interrupt: bool = False


_END = object()


@dataclass
class ReplyControl:
    """The handle a stop or a shutdown uses to end a reply in flight."""

    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def stop(self, seq: int | None = None) -> None:
        self.queue.put_nowait(_Stop(seq))

    def interrupt(self) -> None:
        self.queue.put_nowait(_Stop(None, interrupt=True))


ToolHandler = Callable[[dict[str, Any]], AsyncIterator[dict[str, Any] | str]]


async def _pump(source: AsyncIterator[LLMChunk], queue: asyncio.Queue[Any]) -> None:
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


@db_async
def _checkpoint(message_id: int, text: str, seq: int) -> None:
    Message.objects.filter(pk=message_id, status=Message.Status.STREAMING).update(
        content=text, seq=seq, updated_at=timezone.now()
    )


def _finish_sync(message: Message, fields: dict[str, Any]) -> Message:
    with transaction.atomic():
        # Only a reply still streaming is finished: a reaper or a shutdown may have
        # ended it already, and the first ending wins.
        updated = Message.objects.filter(
            pk=message.pk, status=Message.Status.STREAMING
        ).update(**fields, worker="", updated_at=timezone.now())
        saved = Message.objects.prefetch_related("images").get(pk=message.pk)
        if updated:
            usage_record(message=saved)
    return saved


async def _finish(message: Message, fields: dict[str, Any]) -> Message:
    """Save the final state, retrying a failing database for a while: a finished
    reply must not be silently truncated to its last checkpoint."""
    delay = 0.25
    deadline = time.monotonic() + settings.CHAT_FINAL_SAVE_RETRY_SECONDS
    while True:
        try:
            return await db_async(_finish_sync)(message, fields)
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
    window = settings.CHAT_DELTA_WINDOW_MS / 1000
    checkpoint_every = settings.CHAT_CHECKPOINT_SECONDS
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
    saved_at = time.monotonic()
    saved_seq = seq
    status: str | None = None
    error: LLMError | None = None
    stop_seq: int | None = None
    try:
        while status is None:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            parts: list[str] = []
            for item in batch:
                if isinstance(item, LLMChunk):
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
                delta = "".join(parts)
                seq += 1
                text += delta
                offsets[seq] = len(text)
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
            if status is None:
                now = time.monotonic()
                if seq != saved_seq and now - saved_at >= checkpoint_every:
                    saved_at, saved_seq = now, seq
                    try:
                        await _checkpoint(message.pk, text, seq)
                    except DatabaseError:
                        log.warning(
                            "checkpoint of message %s failed", message.pk, exc_info=True
                        )
                await asyncio.sleep(window)
    finally:
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
    saved = await _finish(message, fields)
    kind = {
        Message.Status.COMPLETE: "reply.completed",
        Message.Status.STOPPED: "reply.stopped",
    }.get(saved.status, "reply.failed")
    yield {"type": kind, "dialogue": dialogue_id, "message": message_dict(saved)}


Publisher = Callable[[dict[str, Any]], Awaitable[None]]
