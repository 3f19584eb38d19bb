"""Shared fixtures: users, dialogues, a temporary media root, the fake OpenAI server
and real daphne processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections
from django.test import override_settings

from tests.factories import DialogueFactory, UserFactory

BASE_DIR = Path(__file__).resolve().parent
# Live keys in Redis are per test run: ids restart with each test database, and a
# stale key from an earlier run must not look like a reply in flight. Daphne
# subprocesses inherit it, so they share the run's namespace.
os.environ.setdefault("CHAT_LIVE_PREFIX", f"test-{uuid.uuid4().hex[:12]}")
# DEBUG is off in tests, and the site refuses to serve on a public key: one key per
# run, inherited by daphne subprocesses, so sessions made here are valid there.
os.environ.setdefault("DJANGO_SECRET_KEY", f"test-{secrets.token_urlsafe(40)}")
PASSWORD = "correct-horse-battery-42"


@pytest.fixture(autouse=True, scope="session")
def _run_settings():
    """The run's key and Redis namespace, the daphne subprocesses' too (counters
    such as the sign-up throttle must not carry over from an earlier run, and
    events published here must reach those processes). Settings were read before
    this file: pytest-django loads them first."""
    from django.conf import settings

    prefix = os.environ["CHAT_LIVE_PREFIX"]
    caches = {
        name: {**cache, "KEY_PREFIX": prefix} for name, cache in settings.CACHES.items()
    }
    layers = {
        name: {**layer, "CONFIG": {**layer.get("CONFIG", {}), "prefix": prefix}}
        for name, layer in settings.CHANNEL_LAYERS.items()
    }
    with override_settings(
        SECRET_KEY=os.environ["DJANGO_SECRET_KEY"],
        CACHES=caches,
        CHAT_LIVE_PREFIX=prefix,
        CHANNEL_LAYERS=layers,
    ):
        yield


def _unreachable_services() -> list[str]:
    """The configured PostgreSQL and Redis that do not accept a connection."""
    from urllib.parse import urlsplit

    down = []
    for name, var, default_port in (
        ("PostgreSQL", "DATABASE_URL", 5432),
        ("Redis", "REDIS_URL", 6379),
    ):
        url = urlsplit(os.environ.get(var, ""))
        if not url.scheme.startswith(("postgres", "redis")) or not url.hostname:
            continue
        address = (url.hostname, url.port or default_port)
        try:
            socket.create_connection(address, timeout=3).close()
        except OSError:
            down.append(f"{name} at {address[0]}:{address[1]} ({var})")
    return down


def pytest_sessionstart(session):
    """One sentence instead of a traceback per test when the services are missing."""
    down = _unreachable_services()
    if down:
        pytest.exit(
            "The tests need PostgreSQL and Redis running, and "
            + " and ".join(down)
            + " did not answer: start them (Debian: apt-get install -y postgresql"
            " redis-server) or point DATABASE_URL / REDIS_URL at running ones.",
            returncode=3,
        )


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """The manifest storage needs `collectstatic`; pages rendered in tests don't."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }


@pytest.fixture(scope="session", autouse=True)
def _database_threads_closed(django_db_setup):
    """The database executor's threads close their connections before the test
    database is dropped."""
    yield
    from conversations.asyncdb import db_executor_shutdown

    db_executor_shutdown()
    # Async tests' ORM calls (`aget`, `database_sync_to_async`) run in asgiref's one
    # thread for sync code, which outlives them: close its connection there.
    asyncio.run(sync_to_async(connections.close_all)())
    # Connections of threads that ended (a closed loop's default executor) close
    # when collected.
    gc.collect()


@pytest.fixture
def user(db):
    return UserFactory(password=PASSWORD)


@pytest.fixture
def other_user(db):
    return UserFactory(password=PASSWORD)


@pytest.fixture
def dialogue(user):
    return DialogueFactory(owner=user)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"process exited with {proc.returncode} before listening"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port} after {timeout}s")


def current_database_url() -> str:
    """The URL of the database the tests run on (the test database, once set up)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    return (
        f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"
    )


class DaphneProcess:
    def __init__(self, port: int, proc: subprocess.Popen, log: Path) -> None:
        self.port = port
        self.proc = proc
        self.log = log
        self.http_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/chat/"

    def stop(self, sig: int | None = None, timeout: float = 10) -> None:
        if self.proc.poll() is not None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def daphne_factory(tmp_path) -> Iterator[Callable[..., DaphneProcess]]:
    """Start real daphne processes on the test database; stopped at teardown.

    Use with `django_db(transaction=True)` so what the test writes is visible to them.
    """
    started: list[DaphneProcess] = []

    def start(extra_env: dict[str, str] | None = None) -> DaphneProcess:
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": current_database_url(),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "MEDIA_ROOT": str(tmp_path / "media"),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        log = tmp_path / f"daphne-{port}.log"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "chatsite.asgi:application",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        server = DaphneProcess(port, proc, log)
        started.append(server)
        try:
            wait_for_port(port, proc=proc)
        except Exception:
            print(log.read_text(errors="replace"))
            raise
        return server

    yield start
    for server in started:
        server.stop()


# --- The fake OpenAI-compatible upstream (conversations/testing/fake_openai) --------

FAKE_OPENAI_SETTINGS = {
    "OPENAI_API_KEY": "test-key",
    "CHAT_MODELS": "fake-model:8192,fake-small:2048",
    "DEFAULT_CHAT_MODEL": "fake-model",
    "IMAGE_MODEL": "fake-image",
}


def fake_openai_env(fake) -> dict[str, str]:
    """Environment pointing a daphne subprocess at `fake` (subprocesses do not see
    pytest-django's `settings` overrides): `daphne_factory(fake_openai_env(fake))`."""
    return {"OPENAI_BASE_URL": fake.base_url, **FAKE_OPENAI_SETTINGS}


@pytest.fixture(scope="session")
def _fake_openai_server():
    from conversations.testing.fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_openai(_fake_openai_server, settings):
    """A running FakeOpenAI, reset to its defaults, with the settings pointing at it.

    One server serves the whole session; reset() between tests forgets requests,
    configuration and script and cuts responses still in flight."""
    fake = _fake_openai_server
    fake.reset()
    settings.OPENAI_BASE_URL = fake.base_url
    for name, value in FAKE_OPENAI_SETTINGS.items():
        setattr(settings, name, value)
    yield fake
    fake.reset()
