"""Attachments wherever a message is shown: the admin transcript, the exports
(Markdown links, JSON metadata) and the first paint of the chat page."""

from __future__ import annotations

import base64
import io
import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from attachments.services import attachment_upload, attachments_attach
from attachments.testing import png_bytes
from conversations.services.exports import (
    dialogue_export_json,
    dialogue_export_markdown,
)
from tests.factories import MessageFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(local_storage, dialogue):
    message = MessageFactory(dialogue=dialogue, content="see attached")
    rows = [
        attachment_upload(
            user=dialogue.owner, file=io.BytesIO(data), name=name, size=len(data)
        )
        for data, name in [(png_bytes(40, 30), "cat.png"), (b"# Plan\n", "plan.md")]
    ]
    return attachments_attach(message=message, attachments=rows)


def test_the_admin_transcript_shows_thumbnails_and_document_links(dialogue, sent):
    reviewer = UserFactory(is_staff=True)
    reviewer.user_permissions.add(
        *Permission.objects.filter(codename__in=["review_dialogue", "view_dialogue"])
    )
    client = Client()
    client.force_login(reviewer)

    response = client.get(
        reverse("admin:conversations_dialogue_change", args=[dialogue.pk])
    )

    html = response.content.decode()
    assert response.status_code == 200
    picture, document = sent
    assert f'<img src="/attachments/{picture.pk}/" alt="cat.png"' in html
    assert f'<a href="/attachments/{document.pk}/"' in html and "📄 plan.md" in html


def test_the_markdown_export_links_the_files(dialogue, sent):
    text = dialogue_export_markdown(dialogue=dialogue)

    picture, document = sent
    assert f"![cat.png](/attachments/{picture.pk}/)" in text
    assert f"📎 [plan.md](/attachments/{document.pk}/) (text/markdown, 7 bytes)" in text


def test_the_json_export_describes_the_files(dialogue, sent):
    data = json.loads(dialogue_export_json(dialogue=dialogue))

    (message,) = data["messages"]
    described = [
        {k: v for k, v in a.items() if k != "data"} for a in message["attachments"]
    ]
    # the bytes travel too (base64), so an import restores the files
    assert [base64.b64decode(a["data"]) for a in message["attachments"]] == [
        default_storage.open(a.storage_key).read() for a in sent
    ]
    assert described == [
        {
            "name": "cat.png",
            "kind": "image",
            "content_type": "image/jpeg",
            "size": sent[0].size,
            "width": 40,
            "height": 30,
        },
        {
            "name": "plan.md",
            "kind": "document",
            "content_type": "text/markdown",
            "size": 7,
            "width": None,
            "height": None,
        },
    ]


def test_the_first_paint_shows_the_files(client, dialogue, sent):
    client.force_login(dialogue.owner)

    html = client.get(reverse("chat-dialogue", args=[dialogue.pk])).content.decode()

    picture, document = sent
    assert f'<img src="/attachments/{picture.pk}/" alt="cat.png"' in html
    assert f'href="/attachments/{document.pk}/"' in html and "plan.md" in html
