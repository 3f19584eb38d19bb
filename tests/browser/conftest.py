"""Browser tests: Debian's chromium driven by Playwright against a real daphne.

Run in their own pytest process (the sync API runs an event loop):
    DJANGO_ALLOW_ASYNC_UNSAFE=true .venv/bin/pytest -m browser -p no:asyncio tests/browser
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import BASE_DIR, PASSWORD, fake_openai_env

ARTIFACTS = BASE_DIR / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is missing: apt-get install -y chromium")
    return {**browser_type_launch_args, "executable_path": path, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def static_root(tmp_path_factory) -> Path:
    """collectstatic once, as production does (hashed names, whitenoise serves it)."""
    root = tmp_path_factory.mktemp("static")
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env={**os.environ, "STATIC_ROOT": str(root)},
        check=True,
    )
    return root


@dataclass
class Site:
    url: str
    daphne: object
    fake: object


@pytest.fixture
def site(daphne_factory, fake_openai, static_root) -> Site:
    """A daphne on the test database, its model the fake OpenAI server."""
    fake_openai.configure(tps=200)
    server = daphne_factory(
        {
            **fake_openai_env(fake_openai),
            "STATIC_ROOT": str(static_root),
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000",
        }
    )
    return Site(url=server.http_url, daphne=server, fake=fake_openai)


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def console(page) -> list[str]:
    """Console lines and page errors, for tests that check nothing ran."""
    lines: list[str] = []
    page.on("console", lambda m: lines.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: lines.append(f"pageerror: {e}"))
    return lines


def log_in(page, site: Site, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{site.url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(re.escape(site.url) + r"/(\?.*)?$"))
    wait_online(page)


def wait_online(page) -> None:
    page.wait_for_selector("#conn-state[data-state=open]", timeout=15000)


def wait_hydrated(page) -> None:
    """Online, and the server's first paint (if any) replaced by the live state."""
    wait_online(page)
    page.wait_for_function(
        "() => !document.querySelector('.msg[data-first-paint]')"
        " && document.getElementById('messages').dataset.loading !== 'true'"
    )


def reload(page) -> None:
    page.reload()
    wait_hydrated(page)


def send(page, text: str) -> None:
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")


def reply_text(page, nth: int = -1) -> str:
    return page.evaluate(
        """(nth) => {
            const all = [...document.querySelectorAll('.msg-assistant:not(.d-none) .msg-body')];
            const el = all.at(nth);
            return el ? el.innerText.trim() : null;
        }""",
        nth,
    )
