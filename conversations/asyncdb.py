"""Database calls from async code, off the event loop and in parallel.

Channels' `database_sync_to_async` is thread-sensitive by default: every call of every
reply in the process queues for one thread, so a hundred streams' checkpoints, context
builds and final saves wait on each other. These calls hold no thread-bound state
beyond Django's per-thread connection, so they run on a pool of `CHAT_DB_THREADS`
threads instead, each with its own persistent connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings

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


def db_async(func: Callable[..., T]) -> Callable[..., Any]:
    """`database_sync_to_async`, but run on the loop's pool instead of one thread."""
    return database_sync_to_async(func, thread_sensitive=False)
