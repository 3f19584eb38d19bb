"""Import of dialogue files: our own export (exact round trip), ChatGPT's
conversations.json with its branches, bad files, and the tree rule of old data."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from conversations.models import Dialogue, Message
from conversations.tree_rule import linear_parents
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory

pytestmark = pytest.mark.django_db


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 3), "orange").save(out, format="PNG")
    return out.getvalue()


def _msg(dialogue, role, content, parent=None, replaced=False, **extra):
    return Message.objects.create(
        dialogue=dialogue,
        user=dialogue.owner,
        role=role,
        content=content,
        parent=parent,
        replaced=replaced,
        **extra,
    )


@pytest.fixture
def branchy(user):
    """A dialogue with an edited first question, a regenerated answer, an image,
    usage, an error and unusual characters."""
    d = DialogueFactory(
        owner=user,
        title="Rome «trip» ☀",
        model="fake-model",
        system_prompt="Be brief.\nAlways.",
        pinned=True,
        title_set_by_user=True,
    )
    q1 = _msg(d, "user", "Where to eat?", replaced=True)
    _msg(d, "assistant", "Trastevere.", parent=q1, replaced=True, seq=3)
    q2 = _msg(d, "user", "Where to eat pizza? </script>", client_id="c-1")
    a1 = _msg(
        d,
        "assistant",
        "Failed",
        parent=q2,
        replaced=True,
        status="failed",
        error_code="upstream_error",
        error_message="The model could not answer.",
    )
    a2 = _msg(
        d,
        "assistant",
        "**Da Remo** 🍕",
        parent=q2,
        seq=7,
        prompt_tokens=12,
        completion_tokens=None,
        model="fake-model",
        usage_estimated=True,
        cut_off=True,
    )
    q3 = _msg(d, "user", "/image a pizza", parent=a2)
    a3 = _msg(d, "assistant", "", parent=q3, model="fake-image")
    key = default_storage.save("images/rt.png", ContentFile(_png()))
    GeneratedImage.objects.create(
        message=a3,
        prompt="a pizza",
        revised_prompt="a pizza, photo",
        storage_key=key,
        status="complete",
        width=4,
        height=3,
        model="fake-image",
        size="1024x1024",
    )
    GeneratedImage.objects.create(
        message=a3, prompt="a second", status="failed", error_code="content_policy"
    )
    assert a1.pk < a2.pk
    return d


def _export(client, dialogue) -> bytes:
    response = client.get(reverse("api-dialogue-export-json", args=[dialogue.pk]))
    assert response.status_code == 200
    return response.content


def _import(client, *files):
    uploads = [
        SimpleUploadedFile(name, data, content_type="application/json")
        for name, data in files
    ]
    return client.post(reverse("api-imports"), {"file": uploads})


def test_our_export_round_trips_byte_for_byte(client, user, branchy):
    client.force_login(user)
    first = _export(client, branchy)

    # when the file is imported and the copy exported again
    response = _import(client, ("rome.json", first))
    assert response.status_code == 200, response.content
    summary = response.json()["results"][0]
    assert summary["format"] == "chatsite" and summary["skipped"] == []
    copy = Dialogue.objects.get(pk=summary["imported"][0]["id"])
    assert summary["imported"][0] == {
        "id": copy.pk,
        "title": "Rome «trip» ☀",
        "messages": 7,
    }

    # then the two files are the same bytes, and so is a second round
    second = _export(client, copy)
    assert second == first
    again = _import(client, ("rome.json", second)).json()["results"][0]
    assert _export(client, Dialogue.objects.get(pk=again["imported"][0]["id"])) == first
    # and the copy is a real dialogue: its tree, its shown branch, its image file
    data = json.loads(first)
    assert [m["parent"] for m in data["messages"]] == [None, 1, None, 3, 3, 5, 6]
    shown = copy.messages.filter(replaced=False).order_by("id")
    assert [m.content for m in shown] == [
        "Where to eat pizza? </script>",
        "**Da Remo** 🍕",
        "/image a pizza",
        "",
    ]
    image = GeneratedImage.objects.get(message__dialogue=copy, status="complete")
    assert (
        image.storage_key != ""
        and default_storage.open(image.storage_key).read() == _png()
    )
    assert copy.owner == user and copy.pk != branchy.pk


def test_chatsite_export_holds_no_database_ids(client, user, branchy):
    client.force_login(user)
    data = json.loads(_export(client, branchy))
    assert data["format"] == "chatsite.dialogue.v2"
    assert "id" not in data["dialogue"] and "exported_at" not in data
    assert [m["id"] for m in data["messages"]] == list(range(1, 8))
    assert all(
        "client_id" not in m and "url" not in json.dumps(m) for m in data["messages"]
    )


def _node(nid, parent, children, role=None, text=None, t=None, **message):
    node = {"id": nid, "parent": parent, "children": children, "message": None}
    if role:
        node["message"] = {
            "id": nid,
            "author": {"role": role},
            "create_time": t,
            "content": message.pop(
                "content", {"content_type": "text", "parts": [text]}
            ),
            "status": "finished_successfully",
            "recipient": message.pop("recipient", "all"),
            "metadata": message.pop("metadata", {}),
        }
    return node


def chatgpt_export() -> list:
    """Two conversations as ChatGPT exports them: the first edited and regenerated,
    shown on its older branch, with system, tool, hidden and picture parts."""
    t0 = 1_700_000_000.0
    mapping = {
        "root": _node("root", None, ["sys"]),
        "sys": _node("sys", "root", ["u1", "u1b"], "system", "", t0),
        "u1": _node("u1", "sys", ["a1", "a1b"], "user", "Name a bird", t0 + 1),
        "a1": _node(
            "a1", "u1", ["u2"], "assistant", "Robin", t0 + 2,
            metadata={"model_slug": "gpt-4o"},
        ),
        "a1b": _node("a1b", "u1", [], "assistant", "Heron", t0 + 5),
        "u2": _node(
            "u2", "a1", ["call"], "user", None, t0 + 3,
            content={
                "content_type": "multimodal_text",
                "parts": [{"content_type": "image_asset_pointer"}, "Draw it"],
            },
        ),
        "call": _node(
            "call", "u2", ["tool"], "assistant", "{}", t0 + 4, recipient="dalle.text2im"
        ),
        "tool": _node("tool", "call", ["a2"], "tool", "done", t0 + 4.5),
        "a2": _node("a2", "tool", [], "assistant", "Here is a robin.", t0 + 4.8),
        "u1b": _node("u1b", "sys", ["hid"], "user", "Name a fish", t0 + 6),
        "hid": _node(
            "hid", "u1b", ["a3"], "assistant", "ctx", t0 + 6.5,
            metadata={"is_visually_hidden_from_conversation": True},
        ),
        "a3": _node("a3", "hid", [], "assistant", "Trout", t0 + 7),
    }  # fmt: skip
    return [
        {
            "title": "Birds",
            "create_time": t0,
            "update_time": t0 + 10,
            "mapping": mapping,
            "current_node": "a2",
            "conversation_id": "conv-1",
            "default_model_slug": "gpt-4",
        },
        {
            "title": "Empty",
            "create_time": t0,
            "update_time": t0,
            "mapping": {"r": _node("r", None, [])},
            "current_node": "r",
            "conversation_id": "conv-2",
        },
    ]


def test_chatgpt_export_imports_with_every_branch(client, user):
    client.force_login(user)
    raw = json.dumps(chatgpt_export()).encode()

    response = _import(client, ("conversations.json", raw))

    assert response.status_code == 200, response.content
    summary = response.json()["results"][0]
    assert summary["format"] == "chatgpt"
    assert [i["title"] for i in summary["imported"]] == ["Birds"]
    assert summary["skipped"] == [
        {"title": "Empty", "reason": "it has no messages chatsite can show"}
    ]
    assert {s["reason"]: s["count"] for s in summary["skipped_messages"]} == {
        "calls to tools": 1,
        "hidden messages": 1,
        "pictures and files (not in conversations.json)": 1,
        "system messages": 1,
        "tool messages": 1,
    }
    dialogue = Dialogue.objects.get(owner=user)
    assert dialogue.title == "Birds" and dialogue.imported_from == "chatgpt:conv-1"
    assert dialogue.created_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    rows = {m.content: m for m in dialogue.messages.all()}
    parent = {c: (m.parent.content if m.parent else None) for c, m in rows.items()}
    # the two first questions are siblings, as are the two answers to the first
    assert parent == {
        "Name a bird": None,
        "Name a fish": None,
        "Robin": "Name a bird",
        "Heron": "Name a bird",
        "Draw it": "Robin",
        "Here is a robin.": "Draw it",
        "Trout": "Name a fish",
    }
    # the branch shown in ChatGPT is the one shown here
    shown = dialogue.messages.filter(replaced=False).order_by("id")
    assert [m.content for m in shown] == [
        "Name a bird",
        "Robin",
        "Draw it",
        "Here is a robin.",
    ]
    assert rows["Robin"].model == "gpt-4o" and rows["Here is a robin."].model == "gpt-4"
    # parents always come first, so ids grow down every branch
    assert all(m.parent_id is None or m.parent_id < m.pk for m in rows.values())

    # importing the same export again (zipped, as ChatGPT sends it) skips what is here
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("export/conversations.json", raw)
    again = _import(client, ("export.zip", archive.getvalue())).json()["results"][0]
    assert again["imported"] == []
    assert {"title": "Birds", "reason": "it was imported before"} in again["skipped"]
    assert Dialogue.objects.filter(owner=user).count() == 1


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", "not valid JSON (line 1"),
        (b"\xff\xfe\x00", "not text"),
        (b'{"hello": 1}', "neither a chatsite dialogue export nor ChatGPT"),
        (b'{"format": "chatsite.dialogue.v9"}', "not supported"),
        (b"PK\x03\x04broken", "zip file is damaged"),
    ],
)
def test_unreadable_files_say_why(client, user, raw, error):
    client.force_login(user)
    response = _import(client, ("bad.json", raw))
    assert response.status_code == 400
    assert error in response.json()["results"][0]["error"]
    assert not Dialogue.objects.filter(owner=user).exists()


def test_a_bad_conversation_imports_nothing_of_its_file_and_spares_the_others(
    client, user, branchy
):
    client.force_login(user)
    good = _export(client, branchy)
    broken = chatgpt_export()
    broken.append({"title": "Torn", "mapping": {"x": _node("x", "gone", [])}})
    broken_own = json.loads(good)
    broken_own["messages"][1]["parent"] = 5  # a parent after its child
    before = Dialogue.objects.count()

    response = _import(
        client,
        ("conversations.json", json.dumps(broken).encode()),
        ("own.json", json.dumps(broken_own).encode()),
        ("good.json", good),
    )

    assert response.status_code == 200
    bad, own, fine = response.json()["results"]
    assert bad == {
        "file": "conversations.json",
        "error": "Conversation 3 (“Torn”): node x has a parent that is not in the file.",
    }
    assert own["error"] == "Message 2: its parent 5 is not an earlier message."
    assert len(fine["imported"]) == 1
    assert Dialogue.objects.count() == before + 1  # Birds was not kept either


def test_an_active_branch_that_is_not_a_path_is_refused(client, user, branchy):
    client.force_login(user)
    data = json.loads(_export(client, branchy))
    data["messages"][3]["replaced"] = False  # two shown answers to one question
    response = _import(client, ("x.json", json.dumps(data).encode()))
    assert (
        "two messages shown answer the same message 3"
        in response.json()["results"][0]["error"]
    )


def test_importing_needs_a_signed_in_user_and_the_csrf_token(client, user):
    raw = json.dumps(chatgpt_export()).encode()
    assert _import(client, ("c.json", raw)).status_code == 401
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert _import(strict, ("c.json", raw)).status_code == 403
    assert not Dialogue.objects.filter(owner=user).exists()


def test_a_v1_export_imports_with_its_tree_rebuilt(client, user):
    # given a file exported before the tree: an edit and a regenerate
    flags = [("user", True), ("assistant", True), ("user", False), ("assistant", True), ("assistant", False)]  # fmt: skip
    stamp = "2025-01-01T00:00:00+00:00"
    data = {
        "format": "chatsite.dialogue.v1",
        "exported_at": stamp,
        "dialogue": {"id": 9, "title": "Old", "model": "", "system_prompt": "",
                     "created_at": stamp, "updated_at": stamp},
        "messages": [
            {"id": 100 + i, "dialogue": 9, "role": role, "content": f"m{i}",
             "status": "complete", "created_at": stamp, "replaced": replaced,
             "images": [{"id": 1, "url": "/images/1/"}] if i == 4 else []}
            for i, (role, replaced) in enumerate(flags)
        ],
    }  # fmt: skip
    client.force_login(user)

    summary = _import(client, ("old.json", json.dumps(data).encode())).json()[
        "results"
    ][0]

    rows = {m.content: m for m in Message.objects.filter(dialogue__owner=user)}
    parent = {c: (m.parent.content if m.parent else None) for c, m in rows.items()}
    assert parent == {"m0": None, "m1": "m0", "m2": None, "m3": "m2", "m4": "m2"}
    assert summary["skipped_messages"] == [
        {"reason": "images (v1 files carry no image files)", "count": 1}
    ]


def test_the_tree_rule_turns_replaced_turns_into_siblings():
    # send, send, edit the 2nd question, regenerate twice, edit again, send
    rows = [
        (1, "user", False), (2, "assistant", False),      # q1 a1
        (3, "user", True), (4, "assistant", True),        # q2 a2 (edited away)
        (5, "user", True), (6, "assistant", True),        # q2' a2' (edited away)
        (7, "assistant", True), (8, "assistant", True),   # regenerated a2'' a2'''
        (9, "user", False), (10, "assistant", False),     # q2'' a
        (11, "user", False), (12, "assistant", False),    # q3 a3
    ]  # fmt: skip
    assert linear_parents(rows) == {
        1: None, 2: 1, 3: 2, 4: 3, 5: 2, 6: 5, 7: 5, 8: 5, 9: 2, 10: 9, 11: 10, 12: 11,
    }  # fmt: skip


def test_attachments_travel_with_their_bytes_and_round_trip(client, user, branchy):
    from attachments.models import Attachment
    from attachments.services import attachment_import
    from attachments.testing import png_bytes

    # given a question carrying a picture and a text file
    question = branchy.messages.get(content="/image a pizza")
    attachment_import(message=question, name="menu.txt", data=b"pizza 9\n", position=0)
    attachment_import(message=question, name="photo.png", data=png_bytes(), position=1)
    client.force_login(user)
    first = _export(client, branchy)

    # when it is imported, then the copy has both files, checked and stored anew
    summary = _import(client, ("a.json", first)).json()["results"][0]
    assert summary["skipped_messages"] == []
    copy = Dialogue.objects.get(pk=summary["imported"][0]["id"])
    files = Attachment.objects.filter(message__dialogue=copy).order_by("position")
    assert [(a.name, a.kind) for a in files] == [
        ("menu.txt", "document"),
        ("photo.png", "image"),
    ]
    assert files[0].text.strip() == "pizza 9"
    originals = Attachment.objects.filter(message__dialogue=branchy)
    assert {a.storage_key for a in files}.isdisjoint({a.storage_key for a in originals})
    # and its export is the same bytes
    assert _export(client, copy) == first


def test_an_attachment_that_is_not_what_it_claims_is_skipped_and_counted(
    client, user, branchy
):
    client.force_login(user)
    data = json.loads(_export(client, branchy))
    data["messages"][0]["attachments"] = [
        {"name": "x.png", "data": "PGh0bWw+PC9odG1sPg=="},  # <html></html>
        {"name": "gone.txt", "data": None},
    ]
    summary = _import(client, ("x.json", json.dumps(data).encode())).json()["results"][
        0
    ]
    reasons = {s["reason"]: s["count"] for s in summary["skipped_messages"]}
    assert reasons["attachments without their file"] == 1
    assert any(r.startswith("attachments refused") for r in reasons)
    from attachments.models import Attachment

    assert not Attachment.objects.filter(
        message__dialogue_id=summary["imported"][0]["id"]
    ).exists()
