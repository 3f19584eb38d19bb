"""A closed session closes its sockets (issue 15, item 1): log-out, a password change,
deactivation and expiry close that user's affected sockets on every process within a
few seconds (4401), and a socket refuses work for a session that is no longer valid.
Two real daphne processes share PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from conversations.models import Message
from conversations.tests.test_e2e_daphne import connect, login_cookie, require_redis
from tests.factories import DialogueFactory

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_WITHIN = 6.0  # "a few seconds": the revocation settles 1 s, then re-checks


async def closed_with(ws, timeout: float = CLOSED_WITHIN) -> int:
    """The close code the server sends within `timeout` (frames before it ignored)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1
    except TimeoutError:
        return 0


async def alive(ws) -> bool:
    try:
        await ws.send(json.dumps({"type": "ping"}))
        return json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
    except (websockets.ConnectionClosed, TimeoutError):
        return False


def key_of(cookie: str) -> str:
    return cookie.split("=", 1)[1]


@pytest.fixture
async def two_processes(daphne_factory):
    require_redis()
    a = await asyncio.to_thread(daphne_factory)
    b = await asyncio.to_thread(daphne_factory)
    return a, b


async def test_logout_closes_that_sessions_sockets_on_both_processes(
    user, two_processes
):
    a, b = two_processes
    cookie, other_cookie = await login_cookie(user), await login_cookie(user)
    async with (
        connect(a, cookie) as on_a,
        connect(b, cookie) as on_b,
        connect(b, other_cookie) as other_session,
    ):
        assert await alive(on_a) and await alive(on_b) and await alive(other_session)

        @database_sync_to_async
        def log_out() -> int:
            client = Client()
            client.cookies[settings.SESSION_COOKIE_NAME] = key_of(cookie)
            return client.post("/accounts/logout/").status_code

        assert await log_out() == 302
        codes = await asyncio.gather(closed_with(on_a), closed_with(on_b))

        assert codes == [4401, 4401]
        assert await alive(other_session)  # another session of the same user stays


async def test_a_password_change_closes_every_socket_of_the_user(user, two_processes):
    a, b = two_processes
    cookie = await login_cookie(user)
    async with connect(a, cookie) as on_a, connect(b, cookie) as on_b:
        assert await alive(on_a) and await alive(on_b)

        @database_sync_to_async
        def change_password() -> None:
            user.set_password("a-brand-new-password-7")
            user.save()

        await change_password()

        assert await asyncio.gather(closed_with(on_a), closed_with(on_b)) == [
            4401,
            4401,
        ]


async def test_deactivation_closes_the_users_sockets(user, two_processes):
    a, b = two_processes
    cookie = await login_cookie(user)
    async with connect(a, cookie) as on_a, connect(b, cookie) as on_b:
        assert await alive(on_a) and await alive(on_b)

        @database_sync_to_async
        def deactivate() -> None:
            user.is_active = False
            user.save(update_fields=["is_active"])

        await deactivate()

        assert await asyncio.gather(closed_with(on_a), closed_with(on_b)) == [
            4401,
            4401,
        ]


async def test_a_log_in_elsewhere_leaves_open_sockets_alone(user, two_processes):
    a, _b = two_processes
    cookie = await login_cookie(user)
    async with connect(a, cookie) as ws:
        assert await alive(ws)
        await login_cookie(user)  # saves last_login

        assert await closed_with(ws, timeout=2.5) == 0
        assert await alive(ws)


async def test_an_expiring_session_closes_its_socket_at_expiry(user, two_processes):
    a, _b = two_processes

    @database_sync_to_async
    def short_session() -> str:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.set_expiry(3)
        session.create()
        return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"

    async with connect(a, await short_session()) as ws:
        assert await alive(ws)
        started = asyncio.get_running_loop().time()

        code = await closed_with(ws, timeout=8)

        assert code == 4401
        assert asyncio.get_running_loop().time() - started < 6


async def test_a_socket_refuses_work_once_its_session_is_gone(user, two_processes):
    """The session row deleted behind the site's back (no event): the next frame
    that asks for work closes the socket instead of doing it."""
    a, _b = two_processes
    cookie = await login_cookie(user)
    dialogue = await database_sync_to_async(DialogueFactory)(owner=user)
    async with connect(a, cookie) as ws:
        assert await alive(ws)
        await database_sync_to_async(
            lambda: Session.objects.filter(session_key=key_of(cookie)).delete()
        )()

        await ws.send(
            json.dumps(
                {
                    "type": "message.send",
                    "dialogue": dialogue.pk,
                    "content": "spend my quota",
                    "client_id": "after-logout",
                }
            )
        )
        code = await closed_with(ws)

    assert code == 4401
    assert not await database_sync_to_async(
        Message.objects.filter(dialogue=dialogue).exists
    )()


async def test_the_sweep_finds_a_deleted_session_without_any_event(user, settings):
    """The periodic re-check (a session deleted in the admin sends no event)."""
    from conversations.socket_sessions import SessionWatch

    cookie = await login_cookie(user)
    closed: list[int] = []

    class Socket:
        session_key = key_of(cookie)
        user_id = user.pk

        async def session_closed(self) -> None:
            closed.append(1)

    watch, socket = SessionWatch(), Socket()
    await watch.add(socket)
    settings.SESSION_RECHECK_SECONDS = 60
    now = timezone.now().timestamp()
    await watch.sweep(now=now + 1)
    assert closed == []
    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=socket.session_key).delete()
    )()

    await watch.sweep(now=now + 30)
    assert closed == []  # not due yet
    await watch.sweep(now=now + 61)

    assert closed == [1]
    far = timezone.now() + timedelta(days=400)
    await watch.sweep(now=far.timestamp())  # a removed socket is not checked again
    assert closed == [1]


async def test_changing_ones_own_password_moves_this_tab_to_the_new_session(
    two_processes,
):
    """Django keeps the changer logged in under a new session key (it cycles the
    key): the old key's sockets close with 4401 like every other session's, and the
    browser's new cookie opens a socket at once (the page's 4401 handling goes
    through the log-in page, which sends a logged-in user straight back)."""
    from conftest import PASSWORD
    from tests.factories import UserFactory

    a, b = two_processes
    staff = await database_sync_to_async(UserFactory)(is_staff=True, password=PASSWORD)
    mine, other = await login_cookie(staff), await login_cookie(staff)
    async with connect(a, mine) as this_tab, connect(b, other) as elsewhere:
        assert await alive(this_tab) and await alive(elsewhere)

        @database_sync_to_async
        def change_own_password() -> tuple[int, str]:
            client = Client()
            client.cookies[settings.SESSION_COOKIE_NAME] = key_of(mine)
            response = client.post(
                "/admin/password_change/",
                {
                    "old_password": PASSWORD,
                    "new_password1": "another-long-pass-93",
                    "new_password2": "another-long-pass-93",
                },
            )
            new_key = client.cookies[settings.SESSION_COOKIE_NAME].value
            return response.status_code, f"{settings.SESSION_COOKIE_NAME}={new_key}"

        status, renewed = await change_own_password()
        assert status == 302 and renewed != mine

        codes = await asyncio.gather(closed_with(this_tab), closed_with(elsewhere))
        assert codes == [4401, 4401]
    async with connect(a, renewed) as reopened:
        assert await alive(reopened)
        assert await closed_with(reopened, timeout=2.5) == 0
