"""What a newcomer sees when starting things: no alarm about an optional `.env`, one
clear line for a busy port, one sentence when the tests lack PostgreSQL or Redis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from chatsite.portcheck import port_problem
from conftest import BASE_DIR


def test_settings_say_nothing_about_a_missing_env_file(tmp_path):
    # given no .env next to manage.py (a copy of the settings in a fresh project dir)
    (tmp_path / "chatsite").mkdir()
    for name in ("__init__.py", "settings.py", "secretkey.py"):
        (tmp_path / "chatsite" / name).write_bytes(
            (BASE_DIR / "chatsite" / name).read_bytes()
        )
    # when the settings load with every logger and warning shown
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "always",
            "-c",
            "import logging; logging.basicConfig(level=logging.DEBUG); "
            "import chatsite.settings",
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=True,
    )
    # then nothing mentions the file (django-environ said "<path>/.env doesn't exist")
    output = result.stdout + result.stderr
    assert "/.env" not in output and "doesn't exist" not in output


def test_a_busy_port_gives_one_line_naming_the_port_to_use_instead():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "chatsite.portcheck", "127.0.0.1", str(port)],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
        )
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in lines[0]
    assert f"make run PORT={port + 1}" in lines[0]


def test_a_free_port_passes_and_make_run_checks_before_daphne():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert port_problem("127.0.0.1", port) is None
    recipe = (BASE_DIR / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n")[0]
    assert recipe.index("chatsite.portcheck $(HOST) $(PORT)") < recipe.index("daphne")
    assert "make run PORT=8001" in (BASE_DIR / "README.md").read_text()


def test_tests_without_postgresql_print_one_sentence_not_tracebacks():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once this closes
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed}/chatsite",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_health.py",
        ],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 3
    assert "Traceback" not in output and "psycopg" not in output
    assert f"PostgreSQL at 127.0.0.1:{closed} (DATABASE_URL) did not answer" in output
    assert len(output.strip().splitlines()) <= 2
