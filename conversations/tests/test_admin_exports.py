"""The export services behind the admin's JSON and CSV actions."""

import csv
import io
import json

import pytest

from conversations.models import Dialogue, Message
from conversations.services.exports import (
    CSV_COLUMNS,
    dialogues_export_csv,
    dialogues_export_json,
)
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory, MessageFactory


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _csv_rows(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))


@pytest.mark.django_db
def test_json_export_holds_each_dialogue_with_owner_messages_and_images(user):
    dialogue = DialogueFactory(owner=user, title="Cats", model="m1")
    MessageFactory(dialogue=dialogue, content="draw a cat")
    reply = MessageFactory(
        dialogue=dialogue,
        role=Message.Role.ASSISTANT,
        content="here",
        prompt_tokens=7,
        completion_tokens=3,
        flagged=True,
    )
    image = GeneratedImage.objects.create(
        message=reply, prompt="a cat", storage_key="k.png", status="complete"
    )
    empty = DialogueFactory(owner=user, title="Empty")

    payload = json.loads(dialogues_export_json(dialogues=[dialogue, empty]))

    first, second = payload["dialogues"]
    assert (first["id"], first["title"], first["model"]) == (dialogue.pk, "Cats", "m1")
    assert first["owner"] == {"id": user.pk, "username": user.username}
    assert [m["content"] for m in first["messages"]] == ["draw a cat", "here"]
    assert first["messages"][1]["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "estimated": False,
    }
    assert first["messages"][1]["flagged"] is True
    assert [i["id"] for i in first["messages"][1]["images"]] == [image.pk]
    assert (second["id"], second["messages"]) == (empty.pk, [])
    assert payload["exported_at"]


@pytest.mark.django_db
def test_csv_export_has_one_row_per_message_in_dialogue_order(user):
    a, b = (
        DialogueFactory(owner=user, title="A"),
        DialogueFactory(owner=user, title="B"),
    )
    MessageFactory(dialogue=b, content="b1")
    MessageFactory(dialogue=a, content="a1")
    MessageFactory(dialogue=a, content="a2, with a comma\nand a newline")

    rows = _csv_rows(dialogues_export_csv(dialogues=Dialogue.objects.all()))

    assert list(rows[0]) == CSV_COLUMNS
    assert [(r["dialogue_title"], r["content"]) for r in rows] == [
        ("A", "a1"),
        ("A", "a2, with a comma\nand a newline"),
        ("B", "b1"),
    ]
    assert all(r["owner"] == user.username for r in rows)


@pytest.mark.django_db
@pytest.mark.parametrize("text", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)"])
def test_csv_export_defuses_spreadsheet_formulas(user, text):
    dialogue = DialogueFactory(owner=user, title=text)
    MessageFactory(dialogue=dialogue, content=text)

    (row,) = _csv_rows(dialogues_export_csv(dialogues=[dialogue]))

    assert row["content"] == "'" + text
    assert row["dialogue_title"] == "'" + text


@pytest.mark.django_db
def test_exports_cost_a_fixed_number_of_queries(user, django_assert_max_num_queries):
    dialogues = Dialogue.objects.bulk_create(
        Dialogue(owner=user, title=f"d{i}") for i in range(50)
    )
    Message.objects.bulk_create(
        Message(dialogue=d, user=user, role="user", content=f"m{k}")
        for d in dialogues
        for k in range(10)
    )

    # dialogues, messages, their images, their attachments
    with django_assert_max_num_queries(4):
        body = dialogues_export_csv(dialogues=dialogues)
    with django_assert_max_num_queries(4):
        dialogues_export_json(dialogues=dialogues)

    assert len(_csv_rows(body)) == 500
