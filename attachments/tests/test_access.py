"""Who may fetch an attachment: its owner, and staff holding the review permission
(audited). Anyone else, anonymous visitors included, gets the same 404 as for an
attachment that does not exist. Files go with their dialogue."""

from __future__ import annotations

import io
import urllib.request
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse
from PIL import Image

from attachments.models import Attachment
from attachments.services import attachments_attach
from attachments.testing import pdf_bytes, png_bytes
from conversations.models import TranscriptView
from conversations.services.dialogues import dialogue_delete
from tests.factories import MessageFactory, UserFactory

from .conftest import upload

pytestmark = pytest.mark.django_db


def _sent(client: Client, dialogue, data: bytes, name: str) -> Attachment:
    body = upload(client, data, name).json()["attachment"]
    attachment = Attachment.objects.get(pk=body["id"])
    message = MessageFactory(dialogue=dialogue, content="see attached")
    attachments_attach(message=message, attachments=[attachment])
    attachment.refresh_from_db()
    return attachment


def fetch(client: Client, attachment: Attachment) -> tuple[int, bytes, Any]:
    """What a browser ends up with: the streamed file, or the presigned redirect's."""
    response = client.get(reverse("attachment-file", args=[attachment.pk]))
    if response.status_code == 302:
        with urllib.request.urlopen(response["Location"], timeout=10) as remote:
            return 200, remote.read(), remote.headers
    if response.status_code != 200:
        return response.status_code, response.content, response.headers
    return 200, b"".join(response.streaming_content), response.headers


def test_the_owner_fetches_a_picture(storage, owner_client, dialogue):
    attachment = _sent(owner_client, dialogue, png_bytes(50, 40), "cat.png")

    status, data, headers = fetch(owner_client, attachment)

    assert status == 200
    assert Image.open(io.BytesIO(data)).size == (50, 40)
    assert headers["Content-Type"] == "image/jpeg"


def test_a_text_document_is_served_as_plain_text_with_safe_headers(
    local_storage, owner_client, dialogue
):
    attachment = _sent(owner_client, dialogue, b"# Notes\n", "notes.md")

    response = owner_client.get(reverse("attachment-file", args=[attachment.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == b"# Notes\n"


def test_a_pdf_is_only_offered_as_a_download(storage, owner_client, dialogue):
    attachment = _sent(owner_client, dialogue, pdf_bytes(["hi"]), "q.pdf")

    response = owner_client.get(reverse("attachment-file", args=[attachment.pk]))

    if response.status_code == 302:
        assert "attachment" in urllib.request.unquote(response["Location"])
    else:
        assert response["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("who", ["other user", "anonymous", "staff without permission"])
def test_others_get_the_same_404_as_for_a_missing_attachment(
    storage, owner_client, dialogue, who
):
    attachment = _sent(owner_client, dialogue, png_bytes(), "private.png")
    client = Client()
    if who == "other user":
        client.force_login(UserFactory())
    elif who == "staff without permission":
        client.force_login(UserFactory(is_staff=True))

    foreign = client.get(reverse("attachment-file", args=[attachment.pk]))
    missing = client.get(reverse("attachment-file", args=[attachment.pk + 1000]))

    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert TranscriptView.objects.count() == 0


def test_staff_with_the_review_permission_fetch_it_and_the_access_is_audited(
    storage, owner_client, dialogue
):
    attachment = _sent(owner_client, dialogue, png_bytes(20, 10), "evidence.png")
    reviewer = UserFactory(is_staff=True)
    reviewer.user_permissions.add(Permission.objects.get(codename="review_dialogue"))
    client = Client()
    client.force_login(reviewer)

    status, data, _ = fetch(client, attachment)

    assert status == 200
    assert Image.open(io.BytesIO(data)).size == (20, 10)
    audit = TranscriptView.objects.get()
    assert audit.viewer == reviewer and audit.dialogue == dialogue
    assert f"attachment {attachment.pk}" in audit.dialogue_repr


def test_an_unsent_upload_is_the_owners_alone_even_for_reviewers(
    local_storage, owner_client
):
    attachment_id = upload(owner_client, b"draft", "d.txt").json()["attachment"]["id"]
    reviewer = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(reviewer)

    response = client.get(reverse("attachment-file", args=[attachment_id]))

    assert response.status_code == 404


def test_another_users_unsent_upload_cannot_be_removed(local_storage, owner_client):
    attachment_id = upload(owner_client, b"mine", "m.txt").json()["attachment"]["id"]
    client = Client()
    client.force_login(UserFactory())

    response = client.delete(reverse("attachment-file", args=[attachment_id]))

    assert response.status_code == 404
    assert Attachment.objects.filter(pk=attachment_id).exists()


@pytest.mark.django_db(transaction=True)
def test_deleting_a_dialogue_deletes_its_attachments_and_their_files(
    storage, user, dialogue
):
    client = Client()
    client.force_login(user)
    _sent(client, dialogue, png_bytes(), "a.png")
    _sent(client, dialogue, pdf_bytes(["x"]), "b.pdf")
    unsent = upload(client, b"keep me", "c.txt").json()["attachment"]["id"]
    kept_key = Attachment.objects.get(pk=unsent).storage_key
    assert len(storage.keys()) == 3

    dialogue_delete(dialogue=dialogue)

    assert list(Attachment.objects.values_list("id", flat=True)) == [unsent]
    assert storage.keys() == [kept_key]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_dialogue_delete_keeps_the_files(local_storage, user, dialogue):
    client = Client()
    client.force_login(user)
    _sent(client, dialogue, b"text", "a.txt")

    with pytest.raises(RuntimeError), transaction.atomic():
        dialogue_delete(dialogue=dialogue)
        raise RuntimeError("rollback")

    assert len(local_storage.keys()) == 1
    assert Attachment.objects.count() == 1
