"""Paced writing of every open stream from one timer.

A task per stream sleeping between tokens costs a timer, a future and a task step
per token. Instead, one heap of (due time, stream) is served by a single timer
callback that writes whatever is due straight to each transport (as HTTP/1.1
chunks) and re-arms for the earliest next due time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field

# Streams due within this much of the earliest one go out in the same wake-up.
_BATCH = 0.0005


class Lateness:
    """How late paced writes leave the fake against their schedule: the fake's own
    share of any delay a benchmark measures."""

    def __init__(self) -> None:
        self.writes = 0
        self.max = 0.0
        self.over_5ms = 0
        self.over_20ms = 0
        self.over_50ms = 0

    def add(self, late: float) -> None:
        self.writes += 1
        if late > 0.005:
            self.over_5ms += 1
            self.max = max(self.max, late)
            if late > 0.02:
                self.over_20ms += 1
                if late > 0.05:
                    self.over_50ms += 1

    def as_dict(self) -> dict[str, float]:
        return {
            "paced_writes": self.writes,
            "max_ms": round(self.max * 1000, 1),
            "over_5ms": self.over_5ms,
            "over_20ms": self.over_20ms,
            "over_50ms": self.over_50ms,
        }


@dataclass
class _Job:
    transport: asyncio.Transport
    events: list[bytes]
    index: int
    limit: int
    start: float
    interval: float
    first: bytes
    future: asyncio.Future[int]
    lateness: Lateness = field(repr=False)


class Pacer:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0

    def send(
        self,
        transport: asyncio.Transport | None,
        events: list[bytes],
        index: int,
        limit: int,
        *,
        start: float,
        interval: float,
        first: bytes,
        lateness: Lateness,
    ) -> asyncio.Future[int]:
        """Write events[index:limit] as chunks of a chunked HTTP response, event i
        due at start + i * interval (an absolute schedule, so drift never
        accumulates; whatever is due at a wake-up goes out in one write), with
        `first` before the first of them. The future gives the index reached, or
        raises ConnectionResetError when the connection closed first; cancel it to
        stop writing."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if index >= limit:
            future.set_result(index)
            return future
        if transport is None:
            future.set_exception(ConnectionResetError())
            return future
        job = _Job(
            transport, events, index, limit, start, interval, first, future, lateness
        )
        self._push(start + index * interval, job)
        return future

    def _push(self, due: float, job: _Job) -> None:
        heapq.heappush(self._heap, (due, next(self._order), job))
        if self._timer is None or due < self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(due, self._tick)
            self._timer_when = due

    def _tick(self) -> None:
        self._timer = None
        heap = self._heap
        loop = asyncio.get_running_loop()
        now = loop.time()
        while heap and heap[0][0] <= now + _BATCH:
            due, _, job = heapq.heappop(heap)
            if job.future.done():  # the handler was cancelled
                continue
            if job.transport.is_closing():
                job.future.set_exception(ConnectionResetError())
                continue
            interval = job.interval
            if interval > 0:
                job.lateness.add(now - due)
                reached = int((now - job.start) / interval) + 1
                end = min(job.limit, max(job.index + 1, reached))
            else:
                end = job.limit
            data = b"".join(job.events[job.index : end])
            if job.first:
                data, job.first = job.first + data, b""
            job.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
            job.index = end
            if end >= job.limit:
                job.future.set_result(end)
            else:
                heapq.heappush(
                    heap, (job.start + end * interval, next(self._order), job)
                )
        if heap:
            self._timer = loop.call_at(heap[0][0], self._tick)
            self._timer_when = heap[0][0]
