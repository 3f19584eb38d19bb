"""Helpers to drive the real ASGI application's chat socket in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

# Storage on local media or a real S3 server (moto), shared with the imaging tests.
from imaging.tests.conftest import moto_endpoint, storage  # noqa: F401

ORIGIN = (b"origin", b"http://127.0.0.1")
# The handshake's Host: the origin must be exactly the URL the socket is opened on.
HOST = (b"host", b"127.0.0.1")


@database_sync_to_async
def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


class Socket:
    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.c = communicator

    async def send(self, frame: dict[str, Any]) -> None:
        await self.c.send_json_to(frame)

    async def send_text(self, text: str) -> None:
        await self.c.send_to(text_data=text)

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        return await self.c.receive_json_from(timeout=timeout)

    async def until(self, kind: str, timeout: float = 20) -> list[dict[str, Any]]:
        """Every frame up to and including the first of type `kind`."""
        frames: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self.c.receive_json_from(timeout=timeout)
                    frames.append(frame)
                    if frame["type"] == kind:
                        return frames
        except TimeoutError:
            raise AssertionError(f"no {kind} within {timeout}s; got {frames}") from None

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.c.receive_nothing(timeout=timeout)


@contextlib.asynccontextmanager
async def open_socket(
    user=None, *, origin: tuple[bytes, bytes] | None = ORIGIN
) -> AsyncIterator[Socket]:
    from chatsite.asgi import application

    headers = [HOST, origin] if origin else [HOST]
    if user is not None:
        headers.append(
            (
                b"cookie",
                f"{settings.SESSION_COOKIE_NAME}={await session_cookie(user)}".encode(),
            )
        )
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    try:
        yield Socket(communicator)
    finally:
        await communicator.disconnect()


@pytest.fixture
def socket_for():
    return open_socket


@pytest.fixture(autouse=True)
async def _stop_worker():
    """Each test has its own event loop: end this one's generation and heartbeat tasks."""
    yield
    from conversations.services.workers import get_worker
    from conversations.socket_sessions import get_watch

    await get_worker().stop_background()
    await get_watch().stop()


@pytest.fixture(autouse=True)
def _fast_limits(settings):
    settings.CHAT_RATE_LIMIT_PER_MINUTE = 1000
