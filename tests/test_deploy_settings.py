"""Production configuration: `check --deploy` is clean with the production variables,
and static files are served by the app itself (whitenoise) with DEBUG off."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
    "DJANGO_SECURE_COOKIES": "true",
    "DJANGO_SECURE_HSTS_SECONDS": "31536000",
    "DJANGO_SECURE_SSL_REDIRECT": "true",
    "DJANGO_BEHIND_TLS_PROXY": "true",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_CSRF_TRUSTED_ORIGINS": "https://chat.example.com",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_passes_with_the_production_variables():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_complains_with_the_development_defaults():
    # the safety net works: without the variables, the same check fails
    dev = {"DJANGO_DEBUG": "true", "DJANGO_SECRET_KEY": "short"}

    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=dev)

    assert result.returncode != 0
    assert "security.W018" in result.stderr + result.stdout  # DEBUG on
