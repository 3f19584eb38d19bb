"""A real nginx cluster for the fault tests, started once per module through
deploy/cluster.py on free ports: two daphne processes behind nginx, on the test
database reached through a TCP proxy the tests can cut, and a private redis-server
the tests can restart (never the machine's shared one)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from conftest import (
    FAKE_OPENAI_SETTINGS,
    current_database_url,
    free_port,
    wait_for_port,
)
from deploy.cluster import Cluster

pytestmark = pytest.mark.cluster


class TcpProxy:
    """Forwards 127.0.0.1:port to a target; `cut()` drops every connection and
    refuses new ones until `restore()` (PostgreSQL "unavailable" without stopping it)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer)
        )
        self.writers -= {writer, up_writer}

    def restore(self) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port
            )

        self._call(start())

    def cut(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for writer in list(self.writers):
                writer.transport.abort()
            self.writers.clear()

        self._call(stop())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_seconds: float = 1.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def _proxied(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    auth = netloc[0] + "@" if len(netloc) == 2 else ""
    return urlunsplit(
        (parts.scheme, f"{auth}127.0.0.1:{port}", parts.path, parts.query, "")
    )


class FaultCluster:
    def __init__(
        self, cluster: Cluster, redis: PrivateRedis, pg: TcpProxy, fake: Any
    ) -> None:
        self.cluster, self.redis, self.pg, self.fake = cluster, redis, pg, fake

    def backend_ws(self, index: int) -> str:
        return f"ws://127.0.0.1:{self.cluster.backends[index].port}/ws/chat/"

    def detail(self, index: int) -> dict[str, Any]:
        import urllib.request

        url = f"http://127.0.0.1:{self.cluster.backends[index].port}/healthz?detail=1"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return json.loads(exc.read())


@pytest.fixture(scope="module")
def fault_cluster(
    django_db_setup, django_db_blocker, tmp_path_factory
) -> Iterator[FaultCluster]:
    from conversations.testing.fake_openai import FakeOpenAI

    root = tmp_path_factory.mktemp("cluster")
    with django_db_blocker.unblock():
        database_url = current_database_url()
    if not database_url.startswith("postgres"):
        pytest.fail("the cluster tests need PostgreSQL (DATABASE_URL=postgres://...)")
    target = urlsplit(database_url)
    pg = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    redis = PrivateRedis(root)
    fake = FakeOpenAI(record=False).start()
    cluster = Cluster(
        root=root,
        procs=2,
        port=free_port(),
        database_url=_proxied(database_url, pg.port),
        redis_url=redis.url,
        access_log=False,
        env={
            "OPENAI_BASE_URL": fake.base_url,
            **FAKE_OPENAI_SETTINGS,
            "STATIC_ROOT": str(root / "static"),
            "MEDIA_ROOT": str(root / "media"),
            "CHAT_RATE_LIMIT_PER_MINUTE": "10000",
            # the churn test opens 50 sockets at once for one user, beside 4 senders
            "CHAT_MAX_SOCKETS_PER_USER": "100",
            "CHAT_SHUTDOWN_GRACE_SECONDS": "5",
            "DATABASE_CONNECT_TIMEOUT": "2",
            # a final save gives up (and waits in Redis) after 5 s of outage
            "CHAT_FINAL_SAVE_RETRY_SECONDS": "5",
            "LOG_LEVEL": "INFO",
        },
    )
    try:
        # pytest-django migrated the test database already.
        cluster.start(migrate=False)
        yield FaultCluster(cluster, redis, pg, fake)
    finally:
        cluster.stop(timeout=15)
        fake.stop()
        redis.stop()
        pg.close()
        time.sleep(
            1
        )  # let PostgreSQL notice the closed sessions before the test DB drops
        for backend in cluster.backends:
            log = Path(backend.log)
            if log.exists():
                print(
                    f"--- {log.name} (tail)\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-400:])
                )


def session_cookie(user: Any) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


class Client:
    """A websocket client speaking the chat protocol."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, url: str, cookie: str) -> Client:
        from websockets.asyncio.client import connect

        ws = await connect(
            url,
            additional_headers={"Cookie": cookie},
            # the page's origin: the scheme, host and port the socket is opened on
            origin=url.replace("ws", "http", 1).partition("/ws/")[0],
            open_timeout=10,
            ping_interval=None,
        )
        return cls(ws)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), timeout))

    async def until(self, *types: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.recv(max(0.05, deadline - time.monotonic()))
            if event["type"] in types:
                return event

    async def send_message(self, dialogue_id: int | None, content: str) -> None:
        await self.send(
            {
                "type": "message.send",
                "dialogue": dialogue_id,
                "content": content,
                "client_id": uuid.uuid4().hex,
            }
        )

    async def close(self) -> None:
        await self.ws.close()


def tokens_text(count: int) -> str:
    return "".join(f"tok{i}" if i == 0 else f" tok{i}" for i in range(count))


@pytest.fixture(autouse=True)
async def _close_thread_connections():
    """The ORM calls of these async tests run in asgiref's executor thread; close its
    connection so the test database can be dropped at the end of the session."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()
