"""The websocket `Origin` must be exactly one of the site's origins (issue 15, item 2):
same host on another port or scheme is another site (cross-site websocket hijacking)."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from channels.testing import WebsocketCommunicator

from chatsite.origins import origin_allowed


def scope(origin, host="127.0.0.1:8000", scheme="ws", headers=()):
    raw = [(b"host", host.encode())] if host else []
    if origin is not None:
        raw.append((b"origin", origin.encode()))
    return {"type": "websocket", "scheme": scheme, "headers": raw + list(headers)}


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:9300",  # same host, another port
        "https://127.0.0.1:8000",  # same host and port, another scheme
        "http://127.0.0.1",  # port 80 is another origin than 8000
        "http://localhost:8000",  # an allowed host, but not the one the socket uses
        "http://evil.example:8000",
        "null",
        "",
        "http://127.0.0.1:8000/path",
    ],
)
def test_an_origin_other_than_the_sockets_own_is_refused(settings, origin):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.CSRF_TRUSTED_ORIGINS = []

    assert not origin_allowed(scope(origin))


def test_the_sockets_own_origin_is_accepted(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CSRF_TRUSTED_ORIGINS = []

    assert origin_allowed(scope("http://127.0.0.1:8000"))
    assert origin_allowed(scope("https://127.0.0.1", host="127.0.0.1", scheme="wss"))
    assert origin_allowed(scope("http://127.0.0.1", host="127.0.0.1:80"))


def test_a_missing_origin_or_a_host_outside_allowed_hosts_is_refused(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.CSRF_TRUSTED_ORIGINS = []

    assert not origin_allowed(scope(None))
    assert not origin_allowed(scope("http://evil.example", host="evil.example"))
    assert not origin_allowed(scope("http://127.0.0.1:8000", host=""))


def test_behind_a_tls_proxy_the_forwarded_scheme_counts(settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.CSRF_TRUSTED_ORIGINS = []
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = [(b"x-forwarded-proto", b"https")]

    good = scope("https://chat.example.com", host="chat.example.com", headers=forwarded)
    plain = scope("http://chat.example.com", host="chat.example.com", headers=forwarded)

    assert origin_allowed(good)
    assert not origin_allowed(plain)


def test_csrf_trusted_origins_are_matched_exactly_or_by_subdomain_pattern(settings):
    settings.ALLOWED_HOSTS = ["backend"]
    settings.CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1:8080", "https://*.example.com"]

    assert origin_allowed(scope("http://127.0.0.1:8080", host="backend"))
    assert origin_allowed(scope("https://chat.example.com", host="backend"))
    assert not origin_allowed(scope("http://127.0.0.1:8081", host="backend"))
    assert not origin_allowed(scope("http://chat.example.com", host="backend"))
    assert not origin_allowed(scope("https://example.com.evil", host="backend"))


@pytest.mark.django_db(transaction=True)
async def test_the_application_denies_a_handshake_from_another_port(settings):
    from chatsite.asgi import application

    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:9300")]
    communicator = WebsocketCommunicator(application, "/ws/chat/", headers=headers)

    connected, _ = await communicator.connect()

    assert not connected


@pytest.mark.django_db(transaction=True)
async def test_daphne_refuses_a_page_of_the_same_host_on_another_port(
    user, daphne_factory
):
    from conversations.tests.test_e2e_daphne import connect, login_cookie

    server = await asyncio.to_thread(daphne_factory)
    cookie = await login_cookie(user)
    other_port = f"http://127.0.0.1:{server.port + 1}"

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(server, cookie, origin=other_port):
            pass

    assert refused.value.response.status_code == 403
    async with connect(server, cookie) as ws:  # the site's own origin
        await ws.send('{"type": "ping"}')
        assert await asyncio.wait_for(ws.recv(), 5) == '{"type":"pong"}'
