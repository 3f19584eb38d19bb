"""The foundation: settings from the environment, accounts, scoping, channel layers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import websockets
from channels.layers import get_channel_layer
from django.urls import reverse

from conversations.models import Dialogue

BASE_DIR = Path(__file__).resolve().parent.parent
PROBE = """
import json, django
from django.conf import settings
django.setup()
from conversations.catalog import chat_models, default_model, provider_configured
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "db_name": str(settings.DATABASES["default"]["NAME"]),
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "layer_config": settings.CHANNEL_LAYERS["default"].get("CONFIG"),
    "storage": settings.STORAGES["default"]["BACKEND"],
    "storage_options": {k: str(v) for k, v in settings.STORAGES["default"].get("OPTIONS", {}).items()},
    "debug": settings.DEBUG, "secret": settings.SECRET_KEY, "hosts": settings.ALLOWED_HOSTS,
    "csrf": settings.CSRF_TRUSTED_ORIGINS, "provider": provider_configured(),
    "models": [m.name for m in chat_models()], "windows": [m.context_tokens for m in chat_models()],
    "default_model": default_model().name, "image_model": settings.IMAGE_MODEL,
    "base_url": settings.OPENAI_BASE_URL, "tz": settings.TIME_ZONE,
}, default=str))
"""
VARIABLES = [
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
    "DJANGO_ALLOWED_HOSTS",
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    "DATABASE_URL",
    "REDIS_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "CHAT_MODELS",
    "DEFAULT_CHAT_MODEL",
    "IMAGE_MODEL",
    "OSS_BUCKET",
    "OSS_ENDPOINT",
    "OSS_REGION",
    "OSS_ACCESS_KEY_ID",
    "OSS_ACCESS_KEY_SECRET",
    "AWS_STORAGE_BUCKET_NAME",
]


def probe(tmp_path, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    (tmp_path / "empty").mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=BASE_DIR,
        env={**clean, "DJANGO_SETTINGS_MODULE": "chatsite.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_embedded_defaults_need_nothing_installed(tmp_path):
    s = probe(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3" and s["db_name"].endswith(
        "db.sqlite3"
    )
    assert s["layer"] == "conversations.realtime.layer.ChatLayer"
    assert s["layer_config"]["url"] is None  # in memory
    assert s["storage"] == "django.core.files.storage.FileSystemStorage"
    assert s["provider"] is False and s["models"] == ["offline-demo"]
    assert s["debug"] is False and s["tz"] == "UTC"


def test_each_variable_is_read(tmp_path):
    s = probe(
        tmp_path,
        DJANGO_SECRET_KEY="k" * 60,
        DJANGO_DEBUG="true",
        DJANGO_ALLOWED_HOSTS="chat.example.com,a.b",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.com",
        DATABASE_URL="postgres://u:p@db.example:5432/chat",
        REDIS_URL="redis://127.0.0.1:6379/3",
        OPENAI_API_KEY="sk-x",
        OPENAI_BASE_URL="http://127.0.0.1:11434/v1",
        CHAT_MODELS="gpt-4o-mini:128000,llama3.2:8192,qwen2.5:7b",
        DEFAULT_CHAT_MODEL="llama3.2",
        IMAGE_MODEL="dall-e-3",
    )
    assert s["secret"] == "k" * 60 and s["debug"] is True
    assert s["hosts"] == ["chat.example.com", "a.b"] and s["csrf"] == [
        "https://chat.example.com"
    ]
    assert s["engine"] == "django.db.backends.postgresql" and s["db_name"] == "chat"
    assert s["layer"] == "conversations.realtime.layer.ChatLayer"
    assert s["layer_config"]["url"] == "redis://127.0.0.1:6379/3"
    assert s["provider"] is True and s["base_url"] == "http://127.0.0.1:11434/v1"
    assert s["models"] == ["gpt-4o-mini", "llama3.2", "qwen2.5:7b"]
    assert s["windows"][:2] == [128000, 8192]
    assert s["default_model"] == "llama3.2" and s["image_model"] == "dall-e-3"


def test_oss_variables_select_the_s3_backend(tmp_path):
    s = probe(
        tmp_path,
        OSS_BUCKET="my-bucket",
        OSS_REGION="cn-hangzhou",
        OSS_ACCESS_KEY_ID="id",
        OSS_ACCESS_KEY_SECRET="secret",
    )
    assert s["storage"] == "storages.backends.s3.S3Storage"
    assert s["storage_options"]["bucket_name"] == "my-bucket"
    assert (
        s["storage_options"]["endpoint_url"]
        == "https://s3.oss-cn-hangzhou.aliyuncs.com"
    )


def test_anonymous_users_are_sent_to_log_in(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_sign_up_validates_passwords_and_logs_in(client, db):
    weak = client.post(
        reverse("signup"), {"username": "ann", "password1": "123", "password2": "123"}
    )
    assert weak.status_code == 200 and not Dialogue.objects.exists()
    ok = client.post(
        reverse("signup"),
        {
            "username": "ann",
            "password1": "a-strong-pass-42",
            "password2": "a-strong-pass-42",
        },
    )
    assert ok.status_code == 302
    assert client.get("/").status_code == 200


def test_standard_login_form_logs_in(client, user):
    page = client.get(reverse("login"))
    assert b'name="username"' in page.content and b'name="password"' in page.content
    response = client.post(
        reverse("login"),
        {"username": user.username, "password": "correct-horse-battery-42"},
    )
    assert response.status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_redis_layer_carries_a_message_between_two_consumers(settings):
    assert os.environ.get("REDIS_URL"), "needs REDIS_URL (CI fails without Redis)"
    layer = get_channel_layer()
    assert type(layer).__name__ == "ChatLayer" and layer.address is not None
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("foundation-test", first)
    await layer.group_add("foundation-test", second)
    await layer.group_send("foundation-test", {"type": "chat.event", "text": "hi"})
    got = await asyncio.wait_for(
        asyncio.gather(layer.receive(first), layer.receive(second)), 5
    )
    assert [m["text"] for m in got] == ["hi", "hi"]
    await layer.group_discard("foundation-test", first)
    await layer.group_discard("foundation-test", second)


@pytest.mark.django_db(transaction=True)
async def test_idle_redis_layer_websocket_stays_open_past_ten_seconds(
    user, daphne_factory
):
    """An idle socket and its Redis connections outlive any read timeout."""
    from conversations.tests.test_e2e_daphne import connect, login_cookie

    assert os.environ.get("REDIS_URL"), "needs REDIS_URL (CI fails without Redis)"
    server = await asyncio.to_thread(daphne_factory)
    async with connect(server, await login_cookie(user)) as ws:
        await asyncio.sleep(11)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}
    with pytest.raises(websockets.InvalidStatus):
        async with connect(
            server, await login_cookie(user), origin="https://evil.example"
        ):
            pass
