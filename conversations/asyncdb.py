"""Database calls from async code, off the event loop and in parallel.

Channels' `database_sync_to_async` is thread-sensitive by default: every call of every
reply in the process queues for one thread, so a hundred streams' checkpoints, context
builds and final saves wait on each other. These calls hold no thread-bound state
beyond Django's per-thread connection, so they run on `DatabaseExecutor`: a fixed set
of `CHAT_DB_THREADS` threads, each with its own persistent connection, which it closes
when the executor shuts down (`db_executor_shutdown`, at process exit and after the
tests) rather than leaving it to the garbage collector.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

T = TypeVar("T")

# How often a pool thread's connection is health-checked (Django's CONN_HEALTH_CHECKS
# runs `SELECT 1` before the first query after every `close_old_connections`, which
# channels does around each call: a second round trip for every database call).
HEALTH_CHECK_SECONDS = 5.0

_WorkItem = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DatabaseExecutor(Executor):
    """`threads` worker threads for database calls; each closes its connections on
    `shutdown`. Threads start with the first call."""

    def __init__(self, threads: int) -> None:
        self.size = threads
        self.work: queue.SimpleQueue[_WorkItem | None] = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.closed = False
        self.lock = threading.Lock()

    def submit(  # type: ignore[override]
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> Future[T]:
        with self.lock:
            if self.closed:
                raise RuntimeError("the database executor is shut down")
            if not self.threads:
                for i in range(self.size):
                    thread = threading.Thread(
                        target=self.run, name=f"db-{i}", daemon=True
                    )
                    thread.start()
                    self.threads.append(thread)
        future: Future[T] = Future()
        self.work.put((future, fn, args, kwargs))
        return future

    def run(self) -> None:
        checked: dict[str, float] = {}
        try:
            while (item := self.work.get()) is not None:
                future, fn, args, kwargs = item
                if not future.set_running_or_notify_cancel():
                    continue
                _recycle_connections(checked)
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                finally:
                    _recycle_connections(checked)
        finally:
            connections.close_all()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            threads = list(self.threads)
        for _thread in threads:
            self.work.put(None)  # each thread takes one and ends
        if wait:
            for thread in threads:
                thread.join(timeout=10)


def _recycle_connections(checked: dict[str, float]) -> None:
    """`close_old_connections`, with the health check at most every few seconds per
    connection (`checked`: this thread's last check per alias), and at once after a
    database error."""
    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        if (
            conn.connection is None
            or conn.errors_occurred
            or now - checked.get(conn.alias, 0.0) >= HEALTH_CHECK_SECONDS
        ):
            conn.close_if_unusable_or_obsolete()
            checked[conn.alias] = now
        elif conn.close_at is not None and now >= conn.close_at:
            conn.close()


_executor: DatabaseExecutor | None = None
_executor_lock = threading.Lock()


def db_executor() -> DatabaseExecutor:
    """The process's database executor (a new one after a shutdown)."""
    global _executor
    with _executor_lock:
        if _executor is None or _executor.closed:
            _executor = DatabaseExecutor(settings.CHAT_DB_THREADS)
        return _executor


def db_executor_shutdown() -> None:
    """End the executor's threads, each closing its database connections."""
    with _executor_lock:
        executor = _executor
    if executor is not None:
        executor.shutdown(wait=True)


atexit.register(db_executor_shutdown)


def db_async(func: Callable[..., T]) -> Callable[..., Any]:
    """`func` as a coroutine function run on the database executor, with the
    connections of its thread recycled around each call."""
    executor: DatabaseExecutor | None = None
    run: Callable[..., Any] = func

    async def call(*args: Any, **kwargs: Any) -> T:
        nonlocal executor, run
        current = db_executor()
        if current is not executor:
            executor = current
            run = sync_to_async(
                func, thread_sensitive=False, executor=cast(Any, current)
            )
        return cast(T, await run(*args, **kwargs))

    call.__name__ = getattr(func, "__name__", "db_call")
    call.__doc__ = func.__doc__
    return call
