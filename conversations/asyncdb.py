"""Database calls from async code, off the event loop and in parallel.

Channels' `database_sync_to_async` is thread-sensitive by default: every call of every
reply in the process queues for one thread, so a hundred streams' checkpoints, context
builds and final saves wait on each other. These calls hold no thread-bound state
beyond Django's per-thread connection, so they run on a pool of `CHAT_DB_THREADS`
threads instead, each with its own persistent connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections

T = TypeVar("T")

_pools: dict[int, ThreadPoolExecutor] = {}


def install_pool() -> None:
    """Give the running loop a default executor sized for database work."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _pools:
        _pools.clear()
        pool = ThreadPoolExecutor(
            max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="db"
        )
        _pools[id(loop)] = pool
        loop.set_default_executor(pool)


# How often a pool thread's connection is health-checked (Django's CONN_HEALTH_CHECKS
# runs `SELECT 1` before the first query after every `close_old_connections`, which
# channels does around each call: a second round trip for every database call).
HEALTH_CHECK_SECONDS = 5.0


def _recycle_connections() -> None:
    """`close_old_connections`, with the health check at most every few seconds per
    connection, and at once after a database error."""
    now = time.monotonic()
    for conn in connections.all(initialized_only=True):
        if (
            conn.connection is None
            or conn.errors_occurred
            or now - getattr(conn, "chatsite_checked_at", 0.0) >= HEALTH_CHECK_SECONDS
        ):
            conn.close_if_unusable_or_obsolete()
            conn.chatsite_checked_at = now
        elif conn.close_at is not None and now >= conn.close_at:
            conn.close()


class _PooledDatabaseSyncToAsync(SyncToAsync):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        _recycle_connections()
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            _recycle_connections()


def db_async(func: Callable[..., T]) -> Callable[..., Any]:
    """`database_sync_to_async` (connections recycled around each call), but run on
    the loop's pool instead of one thread."""
    return _PooledDatabaseSyncToAsync(func, thread_sensitive=False)
