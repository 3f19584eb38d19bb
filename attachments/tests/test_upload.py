"""The upload view: multipart with CSRF, checked by content, limits and quota,
pictures re-encoded, stored under generated keys on local media and on S3 (moto)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from attachments import quota, services
from attachments.exceptions import AttachmentRefused
from attachments.models import Attachment, UploadDaily
from attachments.testing import bomb_png, jpeg_with_gps, pdf_bytes, png_bytes

from .conftest import upload

pytestmark = pytest.mark.django_db


def test_a_picture_is_re_encoded_within_bounds_and_stored_under_a_generated_key(
    storage, owner_client, user
):
    response = upload(owner_client, png_bytes(3000, 1000), "../../etc/holiday.png")

    assert response.status_code == 201
    body = response.json()["attachment"]
    assert body["kind"] == "image"
    assert (body["width"], body["height"]) == (2048, 683)
    assert body["name"] == "holiday.png"
    assert body["content_type"] == "image/jpeg"
    row = Attachment.objects.get(pk=body["id"])
    assert row.owner == user and row.message is None
    assert row.storage_key.startswith("attachments/")
    assert "holiday" not in row.storage_key
    assert storage.keys() == [row.storage_key]
    stored = Image.open(io.BytesIO(storage.read(row.storage_key)))
    assert stored.size == (2048, 683)
    assert body["size"] == row.size == len(storage.read(row.storage_key))


def test_exif_and_gps_are_stripped_from_pictures(local_storage, owner_client):
    original = Image.open(io.BytesIO(jpeg_with_gps()))
    assert original.getexif().get_ifd(0x8825)  # the test file has a position

    response = upload(owner_client, jpeg_with_gps(), "photo.jpg")

    row = Attachment.objects.get(pk=response.json()["attachment"]["id"])
    stored = Image.open(io.BytesIO(local_storage.read(row.storage_key)))
    assert dict(stored.getexif()) == {}
    assert b"SpyCam" not in local_storage.read(row.storage_key)


def test_a_picture_with_transparency_stays_a_png(local_storage, owner_client):
    response = upload(owner_client, png_bytes(40, 30, alpha=True), "logo.png")

    assert response.json()["attachment"]["content_type"] == "image/png"


def test_a_png_renamed_pdf_is_refused(local_storage, owner_client):
    response = upload(owner_client, png_bytes(), "report.pdf")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "type_mismatch"
    assert "report.pdf" in response.json()["error"]["message"]
    assert local_storage.keys() == []
    assert Attachment.objects.count() == 0


def test_an_html_file_named_png_is_refused(local_storage, owner_client):
    page = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"

    response = upload(owner_client, page, "cat.png")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "type_mismatch"
    assert local_storage.keys() == []


def test_html_is_refused_whatever_its_name(local_storage, owner_client):
    response = upload(owner_client, b"<html><script>x()</script></html>", "notes.txt")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_type"


def test_a_decompression_bomb_is_refused_before_it_is_decoded(
    local_storage, owner_client
):
    bomb = bomb_png(10_000, 6_000)  # 60 million pixels in a few KB
    assert len(bomb) < 100_000

    response = upload(owner_client, bomb, "bomb.png")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert "pixels" in response.json()["error"]["message"]
    assert local_storage.keys() == []


def test_an_empty_file_is_refused(local_storage, owner_client):
    response = upload(owner_client, b"", "empty.txt")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty"


def test_binary_data_and_non_utf8_text_are_refused(local_storage, owner_client):
    binary = upload(owner_client, bytes(range(256)) * 8, "data.bin")
    latin1 = upload(owner_client, "café crème".encode("latin-1"), "menu.txt")

    assert binary.status_code == latin1.status_code == 415
    assert "UTF-8 text" in latin1.json()["error"]["message"]


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("notes.md", b"# Plan\n\n- one\n- two\n", "text/markdown"),
        ("table.csv", b"name,age\nada,36\n", "text/csv"),
        ("data.json", b'{"a": [1, 2]}', "application/json"),
        ("broken.json", b'{"a": [1, 2', "text/plain"),
        ("main.py", b"def f():\n    return 1\n", "text/x-python"),
        ("README", "plain text, ünïcode\n".encode(), "text/plain"),
    ],
)
def test_text_documents_are_accepted_by_content(
    local_storage, owner_client, name, data, content_type
):
    response = upload(owner_client, data, name)

    assert response.status_code == 201, response.json()
    body = response.json()["attachment"]
    assert body["kind"] == "document"
    assert body["content_type"] == content_type
    assert body["width"] is None
    row = Attachment.objects.get(pk=body["id"])
    assert row.text == data.decode()
    assert local_storage.read(row.storage_key) == data


def test_a_pdf_is_stored_as_is_and_its_text_extracted(storage, owner_client):
    data = pdf_bytes(["Quarterly revenue grew", "Costs fell sharply"])

    response = upload(owner_client, data, "q3.pdf")

    assert response.status_code == 201
    row = Attachment.objects.get(pk=response.json()["attachment"]["id"])
    assert row.content_type == "application/pdf"
    assert row.pages == 2
    assert "Quarterly revenue grew" in row.text and "Costs fell sharply" in row.text
    assert storage.read(row.storage_key) == data


def test_a_damaged_pdf_is_refused(local_storage, owner_client):
    response = upload(owner_client, b"%PDF-1.4\n garbage without objects", "x.pdf")

    assert response.status_code == 415
    assert "could not be read" in response.json()["error"]["message"]


@pytest.mark.parametrize("method", ["put", "post"])
def test_a_file_over_the_per_file_limit_is_refused_and_not_stored(
    settings, local_storage, owner_client, method
):
    settings.ATTACHMENT_MAX_FILE_BYTES = 1000

    response = upload(owner_client, b"x" * 5000, "big.txt", method=method)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert local_storage.keys() == []
    assert UploadDaily.objects.count() == 0


def test_the_daily_quota_refuses_past_it_and_resets_the_next_day(settings, user):
    settings.ATTACHMENT_DAILY_BYTES = 100
    day = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)

    quota.upload_quota_reserve(user=user, size=60, now=day)
    with pytest.raises(AttachmentRefused) as refused:
        quota.upload_quota_reserve(user=user, size=60, now=day)
    quota.upload_quota_reserve(user=user, size=60, now=day + timedelta(hours=2))

    assert refused.value.code == "quota_exceeded"
    assert "resets at midnight UTC" in refused.value.message
    assert quota.upload_used_today(user=user, now=day) == 60


def test_the_upload_view_answers_429_past_the_daily_quota(
    settings, local_storage, owner_client
):
    settings.ATTACHMENT_DAILY_BYTES = 30

    first = upload(owner_client, b"a" * 20, "a.txt")
    second = upload(owner_client, b"b" * 20, "b.txt")

    assert first.status_code == 201
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "quota_exceeded"
    assert len(local_storage.keys()) == 1


def test_an_upload_without_the_csrf_token_is_refused(local_storage, user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    put = upload(client, b"hello", "a.txt")
    post = upload(client, b"hello", "a.txt", method="post")

    assert put.status_code == post.status_code == 403
    assert local_storage.keys() == []


def test_an_upload_with_the_csrf_token_is_accepted(local_storage, user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(reverse("chat"))  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value

    put = upload(client, b"hello", "a.txt", headers={"X-CSRFToken": token})
    post = upload(
        client, b"hello", "b.txt", method="post", headers={"X-CSRFToken": token}
    )

    assert put.status_code == post.status_code == 201


def test_a_body_that_is_not_multipart_is_refused(local_storage, owner_client):
    response = owner_client.put(
        reverse("attachments"), b"raw bytes", content_type="application/octet-stream"
    )

    assert response.status_code == 400
    assert local_storage.keys() == []


def test_anonymous_uploads_are_refused(local_storage, client):
    response = upload(client, b"hello", "a.txt")

    assert response.status_code == 401
    assert local_storage.keys() == []


def test_a_removed_unsent_upload_is_deleted_with_its_file(
    local_storage, owner_client, django_capture_on_commit_callbacks
):
    attachment_id = upload(owner_client, b"hello", "a.txt").json()["attachment"]["id"]

    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.delete(reverse("attachment-file", args=[attachment_id]))

    assert response.status_code == 204
    assert Attachment.objects.count() == 0
    assert local_storage.keys() == []


def test_unsent_uploads_are_purged_after_a_day(local_storage, owner_client):
    attachment_id = upload(owner_client, b"hello", "a.txt").json()["attachment"]["id"]
    created = Attachment.objects.get(pk=attachment_id).created_at

    kept = services.attachments_purge_unsent(
        older_than=timedelta(days=1), now=created + timedelta(hours=23)
    )
    purged = services.attachments_purge_unsent(
        older_than=timedelta(days=1), now=created + timedelta(hours=25)
    )

    assert (kept, purged) == (0, 1)
    assert local_storage.keys() == []


def test_the_purge_command_reports_what_it_deleted(local_storage, owner_client):
    from io import StringIO

    from django.core.management import call_command

    upload(owner_client, b"fresh", "a.txt")
    out = StringIO()

    call_command("purge_attachments", "--hours", "24", stdout=out)

    assert "deleted 0 unsent upload(s)" in out.getvalue()
    assert len(local_storage.keys()) == 1
