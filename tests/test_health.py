"""/healthz: reachability of the database, Redis and storage for load balancers."""

import pytest

from conftest import free_port

pytestmark = pytest.mark.django_db


def layer_on(url: str | None) -> dict:
    backend = "conversations.realtime.layer.ChatLayer"
    return {"default": {"BACKEND": backend, "CONFIG": {"url": url}}}


def test_healthz_reports_every_part_ok_without_login(client, settings):
    # given a working database, Redis and media folder (settings from the env)

    # when an anonymous monitor asks
    response = client.get("/healthz")

    # then everything answers
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["storage"] == "ok"
    assert body["redis"] == ("ok" if settings.REDIS_URL else "not configured")
    assert "no-cache" in response["Cache-Control"]


def test_healthz_is_503_when_redis_does_not_answer(client, settings):
    # given a channel layer whose Redis URL points at a closed port
    settings.CHANNEL_LAYERS = layer_on(f"redis://127.0.0.1:{free_port()}/0")

    # when
    response = client.get("/healthz")

    # then the process reports itself unhealthy, quickly, naming the culprit
    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "database": "ok",
        "redis": "error",
        "storage": "ok",
        "events": {"dropped_events": 0, "refused_commands": 0},
    }


def test_healthz_says_redis_not_configured_without_a_url(client, settings):
    settings.CHANNEL_LAYERS = layer_on(None)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json()["redis"] == "not configured"


def test_healthz_is_503_when_media_storage_is_not_writable(client, settings, tmp_path):
    # given a MEDIA_ROOT that is a file, not a folder
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    settings.MEDIA_ROOT = blocker

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["storage"] == "error"


def test_healthz_details_only_when_enabled(client, settings):
    settings.HEALTHZ_DETAIL = False
    assert "process" not in client.get("/healthz?detail=1").json()

    settings.HEALTHZ_DETAIL = True
    process = client.get("/healthz?detail=1").json()["process"]

    assert process["pid"] > 0
    assert process["rss_kb"] > 0
    assert process["websockets"] == 0
    assert process["draining"] is False


def test_healthz_is_not_redirected_to_https(client, settings):
    # given production settings behind a TLS proxy
    settings.SECURE_SSL_REDIRECT = True

    # when the load balancer probes the backend over plain http
    response = client.get("/healthz")

    # then it gets the answer, not a redirect
    assert response.status_code in (200, 503)
