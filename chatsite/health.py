"""`/healthz`: is this process able to serve? For load balancers and monitors.

Reports the reachability of the database, Redis (the connections carrying this
process's dialogue events) and the media storage as JSON, with 200 when every
configured part answers and 503 otherwise, and the events this process dropped. It is
cheap (one `SELECT 1`, a `PING` per Redis connection, one existence check), needs no login and bounds every probe
with a short timeout, so a dead dependency gives a quick 503 rather than a hang.

`?detail=1` adds process figures (pid, RSS, asyncio tasks, open websockets, draining)
when HEALTHZ_DETAIL is on; the local cluster, its fault tests and the benchmarks
read them to find leaks.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

OK = "ok"
ERROR = "error"
NOT_CONFIGURED = "not configured"


def _database_check() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return OK


async def _redis_check() -> str:
    """The Redis connections that carry this process's events and live text (one
    command and one subscriber connection per event loop) answer a PING."""
    from conversations import realtime

    return await realtime.healthy()


def _storage_check() -> str:
    if isinstance(default_storage, FileSystemStorage):
        # MEDIA_ROOT is created on the first upload: the nearest existing folder
        # must accept files.
        path = Path(default_storage.location)
        while not path.exists() and path != path.parent:
            path = path.parent
        if not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
            raise OSError(f"{path} is not a writable folder")
        return OK
    default_storage.exists("healthz-probe")  # one HEAD/stat round trip
    return OK


async def _bounded(probe, limit: float) -> str:
    try:
        return await asyncio.wait_for(probe, limit)
    except Exception:  # a health probe reports, it never raises
        return ERROR


def _process_detail() -> dict:
    from chatsite import lifecycle

    rss_kb = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "pid": os.getpid(),
        "rss_kb": rss_kb,
        "asyncio_tasks": len(asyncio.all_tasks()),
        "websockets": lifecycle.open_websockets(),
        "draining": lifecycle.draining(),
    }


def _events() -> dict[str, int]:
    from conversations import realtime

    return realtime.stats()


@never_cache
@require_GET
async def healthz(request: HttpRequest) -> JsonResponse:
    timeout = settings.HEALTHZ_TIMEOUT_SECONDS
    # The database check runs in Django's thread for sync code (connections are
    # per thread); the storage check in its own so a slow store can't hold that one.
    database, redis_state, storage = await asyncio.gather(
        _bounded(sync_to_async(_database_check)(), timeout),
        _bounded(_redis_check(), timeout),
        _bounded(sync_to_async(_storage_check, thread_sensitive=False)(), timeout),
    )
    healthy = all(s in (OK, NOT_CONFIGURED) for s in (database, redis_state, storage))
    body = {
        "status": OK if healthy else ERROR,
        "database": database,
        "redis": redis_state,
        "storage": storage,
        # Dialogue events this process could not deliver (a socket's queue full,
        # Redis away): they are also logged; clients catch up on dialogue.open.
        "events": _events(),
    }
    if settings.HEALTHZ_DETAIL and request.GET.get("detail"):
        body["process"] = _process_detail()
    return JsonResponse(body, status=200 if healthy else 503)
