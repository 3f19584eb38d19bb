"""The socket's refusals arrive in the page's language (its cookie or the browser's)."""

from __future__ import annotations

import pytest
from channels.testing import WebsocketCommunicator
from django.conf import settings

from conversations.tests.conftest import HOST, ORIGIN, session_cookie


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "language_header",
    [
        (b"cookie", b"django_language=zh-hans"),
        (b"accept-language", b"zh-CN,zh;q=0.9,en;q=0.5"),
    ],
)
async def test_a_refused_image_request_is_explained_in_the_pages_language(
    user, language_header
):
    from chatsite.asgi import application

    cookie = f"{settings.SESSION_COOKIE_NAME}={await session_cookie(user)}"
    if language_header[0] == b"cookie":
        cookie += "; " + language_header[1].decode()
        headers = [HOST, ORIGIN, (b"cookie", cookie.encode())]
    else:
        headers = [HOST, ORIGIN, (b"cookie", cookie.encode()), language_header]
    ws = WebsocketCommunicator(application, "/ws/chat/", headers=headers)
    assert (await ws.connect())[0]
    try:
        await ws.send_json_to(
            {
                "type": "message.send",
                "dialogue": None,
                "content": "/image",
                "client_id": "c1",
            }
        )
        frame = await ws.receive_json_from(timeout=10)
        while frame["type"] != "error":
            frame = await ws.receive_json_from(timeout=10)
    finally:
        await ws.disconnect()
    assert frame["ref"] == "c1" and frame["code"] == "bad_request"
    assert frame["message"] == "请在 /image 后面描述你想要的图片。"
