"""No default secret in production (issue 15, item 6): with DEBUG off and no key of
its own the server refuses to start, `check --deploy` says why, `make run` works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatsite.secretkey import REFUSAL, ensure_env_file
from conftest import free_port

BASE_DIR = Path(__file__).resolve().parent.parent
NO_KEY = {"DJANGO_SECRET_KEY": "", "DJANGO_DEBUG": "false"}


def _env(**overrides: str) -> dict[str, str]:
    # An empty value, not a missing one: a developer's .env must not supply a key.
    return {**os.environ, "DATABASE_URL": "", "REDIS_URL": "", **overrides}


def test_daphne_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "daphne",
            "-p",
            str(free_port()),
            "chatsite.asgi:application",
        ],
        cwd=BASE_DIR,
        env=_env(**NO_KEY),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == REFUSAL
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "placeholder",
    ["change-me-to-a-long-random-string", "change-me-to-50-or-more-random-characters"],
)
def test_the_shipped_placeholders_are_refused_like_no_key(placeholder):
    env = _env(DJANGO_DEBUG="false", DJANGO_SECRET_KEY=placeholder)

    result = subprocess.run(
        [sys.executable, "-c", "import chatsite.asgi"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1 and result.stderr.strip() == REFUSAL


def test_debug_runs_without_a_key_and_production_runs_with_one():
    for extra in (
        {"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": ""},
        {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "k" * 60},
    ):
        result = subprocess.run(
            [sys.executable, "-c", "import chatsite.asgi"],
            cwd=BASE_DIR,
            env=_env(**extra),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr


def test_check_deploy_reports_a_missing_secret_key():
    from tests.test_deploy_settings import PRODUCTION

    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=_env(**{**PRODUCTION, "DJANGO_SECRET_KEY": ""}),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "chatsite.E001" in result.stdout + result.stderr


def test_make_run_writes_a_generated_key_once_and_keeps_it(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_API_KEY=sk-x\nDJANGO_SECRET_KEY=\n")

    assert ensure_env_file(env_file) is True
    first = env_file.read_text()
    assert ensure_env_file(env_file) is False

    assert env_file.read_text() == first
    key = first.split("DJANGO_SECRET_KEY=")[1].strip()
    assert len(key) >= 50 and "OPENAI_API_KEY=sk-x" in first
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"


def test_a_new_env_file_gets_a_key(tmp_path):
    env_file = tmp_path / ".env"

    ensure_env_file(env_file)

    assert env_file.read_text().startswith("DJANGO_SECRET_KEY=")
