"""This process's share of the work: the replies it generates, its heartbeat, the
control channel other processes use to stop them, and the reaper that finds replies
whose process died (protocol guarantees 1, 5 and 6)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from channels.layers import get_channel_layer
from django.db import DatabaseError
from django.utils import timezone

from ..asyncdb import db_async
from ..models import Message
from ..realtime import WORKER_TTL, broadcast, get_store, send_control, snapshot
from ..serializers import message_dict, with_images
from .streaming import INTERRUPTED_MESSAGE, ReplyControl, _finish_sync

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
REAP_SECONDS = 3.0
OWN_STALE_SECONDS = 60


def dialogue_lock(dialogue_id: int) -> str:
    return f"reply:{dialogue_id}"


class Worker:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex
        self.channel = ""
        self.accepting = True
        self.replies: dict[int, tuple[ReplyControl, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._background: list[asyncio.Task[None]] = []

    async def ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        # A new event loop (tests run one per test) gets fresh background tasks.
        self._loop = loop
        self.replies = {}
        store = get_store()
        await store.heartbeat(self.id)
        layer = get_channel_layer()
        assert layer is not None
        self.channel = await layer.new_channel("chatsite.worker.")
        self._background = [
            loop.create_task(self._heartbeat_loop()),
            loop.create_task(self._control_loop()),
            loop.create_task(self._reap_loop()),
        ]

    async def stop_background(self, grace: float = 5.0) -> None:
        """Cancel this loop's replies and background tasks (tests; shutdown)."""
        tasks = [*self._background, *(task for _c, task in self.replies.values())]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._background, self.replies, self._loop = [], {}, None

    def spawn(
        self, message_id: int, control: ReplyControl, coro: Coroutine[Any, Any, None]
    ) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.replies[message_id] = (control, task)
        task.add_done_callback(lambda _t: self.replies.pop(message_id, None))

    async def stop_reply(self, message_id: int, seq: int | None) -> bool:
        """Stop a reply here, or ask the process generating it; False if none is live."""
        local = self.replies.get(message_id)
        if local is not None:
            local[0].stop(seq)
            return True
        snap = await snapshot(message_id)
        if snap is None or snap.done or not snap.owner:
            return False
        await send_control(
            snap.owner, {"type": "reply.stop", "message_id": message_id, "seq": seq}
        )
        return True

    async def _heartbeat_loop(self) -> None:
        store = get_store()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await store.heartbeat(self.id)
            except Exception:  # Redis restarting: try again next beat
                log.warning("heartbeat failed", exc_info=True)

    async def _control_loop(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("control channel receive failed", exc_info=True)
                await asyncio.sleep(1)
                continue
            if message.get("type") == "reply.stop":
                local = self.replies.get(message.get("message_id"))
                if local is not None:
                    local[0].stop(message.get("seq"))

    async def _reap_loop(self) -> None:
        while True:
            try:
                # First what a database outage left waiting, so it is not reaped.
                await finals_flush()
                await replies_reap(worker=self)
            except Exception:
                log.warning("reaper run failed", exc_info=True)
            await asyncio.sleep(REAP_SECONDS)


_worker = Worker()


def get_worker() -> Worker:
    return _worker


@db_async
def _streaming_rows(only: list[int] | None) -> list[tuple[int, str, int, Any]]:
    rows = Message.objects.filter(status=Message.Status.STREAMING)
    if only is not None:
        rows = rows.filter(pk__in=only)
    return list(rows.values_list("id", "worker", "dialogue_id", "updated_at")[:1000])


@db_async
def _mark_interrupted(
    message_id: int, text: str | None, seq: int | None
) -> Message | None:
    fields: dict[str, Any] = {
        "status": Message.Status.INTERRUPTED,
        "error_code": "interrupted",
        "error_message": INTERRUPTED_MESSAGE,
        "worker": "",
        "updated_at": timezone.now(),
    }
    if text is not None and seq is not None:
        # The live text wins only when it extends the saved checkpoint; a stream key
        # rebuilt after a Redis restart would hold only the tail of the reply.
        saved = (
            Message.objects.filter(pk=message_id)
            .values_list("content", flat=True)
            .first()
        )
        if saved is None or text.startswith(saved):
            fields.update(content=text, seq=seq)
    if not Message.objects.filter(
        pk=message_id, status=Message.Status.STREAMING
    ).update(**fields):
        return None
    return Message.objects.prefetch_related(with_images()).get(pk=message_id)


async def replies_reap(*, worker: Worker, only: list[int] | None = None) -> int:
    """Mark `interrupted` the streaming replies whose process is gone; returns how many."""
    rows = await _streaming_rows(only)
    # This process's own rows are live unless long untouched: one is stored a moment
    # before its task is registered, and must not be reaped in between.
    # Another process's row is judged only once it has been idle longer than a
    # heartbeat lives: right after a Redis restart every heartbeat is gone at once.
    now = timezone.now()
    own_stale = now - timedelta(seconds=OWN_STALE_SECONDS)
    idle = now - timedelta(seconds=WORKER_TTL)
    candidates = [
        r
        for r in rows
        if r[0] not in worker.replies
        and (r[3] < own_stale if r[1] == worker.id else r[3] < idle)
    ]
    if not candidates:
        return 0
    store = get_store()
    try:
        parked = await store.finals()
    except Exception:
        log.warning("could not read the parked final states", exc_info=True)
        return 0
    # A parked reply has its full text waiting: finals_flush saves it.
    candidates = [r for r in candidates if r[0] not in parked]
    alive = await store.alive(
        sorted({r[1] for r in candidates if r[1] and r[1] != worker.id})
    )
    reaped = 0
    for message_id, owner, dialogue_id, _updated in candidates:
        if owner in alive:
            continue
        snap = await snapshot(message_id)
        try:
            message = await _mark_interrupted(
                message_id, snap.text if snap else None, snap.seq if snap else None
            )
        except DatabaseError:
            log.warning(
                "could not mark message %s interrupted", message_id, exc_info=True
            )
            continue
        if message is None:
            continue
        reaped += 1
        log.info("reply %s of a dead process marked interrupted", message_id)
        await store.stream_finish(message_id)
        await broadcast(
            dialogue_id,
            {
                "type": "reply.failed",
                "dialogue": dialogue_id,
                "message": message_dict(message),
            },
        )
    return reaped


FINAL_EVENTS = {
    Message.Status.COMPLETE: "reply.completed",
    Message.Status.STOPPED: "reply.stopped",
}


@db_async
def _final_save(message_id: int, fields: dict[str, Any]) -> Message | None:
    message = Message.objects.filter(pk=message_id).first()
    if message is None:
        return None  # deleted meanwhile
    return _finish_sync(message, dict(fields), with_images=True)


async def finals_flush() -> int:
    """Save the final states a database outage left in the live store (the reply
    runner parks them) and announce each; returns how many were saved."""
    store = get_store()
    saved = 0
    for message_id, (dialogue_id, fields) in (await store.finals()).items():
        try:
            message = await _final_save(message_id, fields)
        except DatabaseError:
            log.warning("database still away; %s waits", message_id, exc_info=True)
            break
        await store.final_done(message_id)
        if message is None:
            continue
        saved += 1
        log.info("reply %s saved after the database came back", message_id)
        await broadcast(
            dialogue_id,
            {
                "type": FINAL_EVENTS.get(message.status, "reply.failed"),
                "dialogue": dialogue_id,
                "message": message_dict(message),
            },
        )
    return saved


def accepting() -> bool:
    return _worker.accepting


async def replies_drain(*, grace: float) -> None:
    """Graceful shutdown: refuse new replies, let those in flight finish within
    `grace` seconds, then end the rest `interrupted` with their text saved."""
    worker = _worker
    worker.accepting = False
    tasks = [task for _control, task in worker.replies.values()]
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=grace)
        for control, task in list(worker.replies.values()):
            if task in pending:
                control.interrupt()
        if pending:
            await asyncio.wait(pending, timeout=10)
    try:
        await get_store().forget_worker(worker.id)
    except Exception:
        log.warning("could not drop the heartbeat", exc_info=True)
