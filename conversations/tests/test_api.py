"""The JSON API under /api/: dialogues, presets, models, usage, exports, context."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone

from conversations.models import Dialogue, Message, Preset
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory, MessageFactory, UserFactory


@pytest.fixture
def api(user):
    client = Client()
    client.force_login(user)
    return client


def send(client, method, url, body=None, **extra):
    if method == "get":
        return client.get(url, **extra)
    return getattr(client, method)(
        url,
        data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        **extra,
    )


def error_code(response):
    return response.json()["error"]["code"]


# --- authentication and CSRF ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", "/api/dialogues/"),
        ("post", "/api/dialogues/"),
        ("get", "/api/dialogues/1/"),
        ("patch", "/api/dialogues/1/"),
        ("delete", "/api/dialogues/1/"),
        ("get", "/api/dialogues/1/export.md"),
        ("get", "/api/dialogues/1/export.json"),
        ("get", "/api/dialogues/1/context/"),
        ("get", "/api/presets/"),
        ("post", "/api/presets/"),
        ("patch", "/api/presets/1/"),
        ("get", "/api/models/"),
        ("get", "/api/usage/"),
    ],
)
def test_anonymous_requests_get_json_401_not_a_login_redirect(method, url):
    response = send(Client(), method, url, {})
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


@pytest.mark.django_db
def test_unsafe_requests_without_the_csrf_token_are_refused(user):
    # given a logged-in browser session that enforces CSRF
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    dialogue = DialogueFactory(owner=user, title="keep me")

    # when it posts, patches and deletes without the token
    responses = [
        send(client, "post", "/api/dialogues/", {"title": "x"}),
        send(client, "patch", f"/api/dialogues/{dialogue.pk}/", {"title": "hacked"}),
        send(client, "delete", f"/api/dialogues/{dialogue.pk}/"),
        send(client, "post", "/api/presets/", {"name": "p"}),
    ]

    # then every one is a JSON 403 and nothing changed
    assert [r.status_code for r in responses] == [403] * 4
    assert {error_code(r) for r in responses} == {"forbidden"}
    dialogue.refresh_from_db()
    assert dialogue.title == "keep me"
    assert Dialogue.objects.filter(owner=user).count() == 1


@pytest.mark.django_db
def test_unsafe_requests_with_the_csrf_token_pass(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/api/models/")
    from django.middleware.csrf import _get_new_csrf_string

    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token

    response = send(
        client, "post", "/api/dialogues/", {"title": "ok"}, HTTP_X_CSRFTOKEN=token
    )

    assert response.status_code == 201


# --- dialogues ------------------------------------------------------------------------


@pytest.mark.django_db
def test_create_a_dialogue_with_title_model_and_system_prompt(api, user, fake_openai):
    response = send(
        api,
        "post",
        "/api/dialogues/",
        {
            "title": "  Trip  plans ",
            "model": "fake-small",
            "system_prompt": "Be brief.",
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["title"] == "Trip plans" and body["title_set_by_user"] is True
    assert body["model"] == "fake-small" and body["system_prompt"] == "Be brief."
    assert Dialogue.objects.get(pk=body["id"]).owner == user


@pytest.mark.django_db
def test_create_from_a_preset_takes_its_prompt_and_model(api, user, fake_openai):
    preset = Preset.objects.create(
        owner=user, name="Coder", system_prompt="Write Python.", model="fake-small"
    )

    response = send(api, "post", "/api/dialogues/", {"preset": preset.pk})

    assert response.status_code == 201
    body = response.json()
    assert body["system_prompt"] == "Write Python." and body["model"] == "fake-small"
    assert body["title"] == "" and body["title_set_by_user"] is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": 5}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"model": "no-such-model"}, "model"),
        ({"model": ["fake-model"]}, "model"),
        ({"system_prompt": None}, "system_prompt"),
        ({"preset": "1"}, "preset"),
        ({"preset": True}, "preset"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_create_refuses_invalid_fields(api, fake_openai, body, field):
    response = send(api, "post", "/api/dialogues/", body)

    assert response.status_code == 400
    assert error_code(response) == "bad_request"
    assert field in response.json()["error"]["fields"]
    assert not Dialogue.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"'])
def test_a_body_that_is_not_a_json_object_is_a_bad_request(api, raw):
    response = api.post("/api/dialogues/", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert error_code(response) == "bad_request"


@pytest.mark.django_db
def test_rename_pin_and_change_settings(api, dialogue, fake_openai):
    response = send(
        api,
        "patch",
        f"/api/dialogues/{dialogue.pk}/",
        {
            "title": "Renamed",
            "pinned": True,
            "model": "fake-small",
            "system_prompt": "Rhyme.",
        },
    )

    assert response.status_code == 200
    dialogue.refresh_from_db()
    assert (dialogue.title, dialogue.title_set_by_user, dialogue.pinned) == (
        "Renamed",
        True,
        True,
    )
    assert (dialogue.model, dialogue.system_prompt) == ("fake-small", "Rhyme.")
    assert response.json()["pinned"] is True


@pytest.mark.django_db
def test_pinned_must_be_a_boolean(api, dialogue):
    response = send(api, "patch", f"/api/dialogues/{dialogue.pk}/", {"pinned": "yes"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"pinned": "invalid"}


@pytest.mark.django_db
def test_patch_with_a_preset_applies_it(api, user, dialogue, fake_openai):
    preset = Preset.objects.create(
        owner=user, name="Poet", system_prompt="Rhyme.", model="fake-small"
    )

    response = send(
        api, "patch", f"/api/dialogues/{dialogue.pk}/", {"preset": preset.pk}
    )

    assert response.status_code == 200
    assert (
        response.json()["system_prompt"] == "Rhyme."
        and response.json()["model"] == "fake-small"
    )


@pytest.mark.django_db
def test_get_and_delete_a_dialogue(api, dialogue):
    MessageFactory(dialogue=dialogue)

    assert api.get(f"/api/dialogues/{dialogue.pk}/").json()["id"] == dialogue.pk
    response = api.delete(f"/api/dialogues/{dialogue.pk}/")

    assert response.status_code == 204
    assert not Dialogue.objects.filter(pk=dialogue.pk).exists()
    assert not Message.objects.filter(dialogue_id=dialogue.pk).exists()
    assert api.get(f"/api/dialogues/{dialogue.pk}/").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "/", None),
        ("patch", "/", {"title": "mine now"}),
        ("delete", "/", None),
        ("get", "/export.md", None),
        ("get", "/export.json", None),
        ("get", "/context/", None),
    ],
)
def test_another_users_dialogue_is_a_404_like_a_missing_one(
    api, other_user, method, suffix, body
):
    # given someone else's dialogue and an id that does not exist
    theirs = DialogueFactory(owner=other_user, title="private")
    missing = theirs.pk + 1000

    # when this user reaches for both
    foreign = send(api, method, f"/api/dialogues/{theirs.pk}{suffix}", body)
    absent = send(api, method, f"/api/dialogues/{missing}{suffix}", body)

    # then the answers are identical 404s and the dialogue is untouched
    assert foreign.status_code == absent.status_code == 404
    assert foreign.json() == absent.json()
    assert foreign.json()["error"]["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.title == "private"


@pytest.mark.django_db
def test_list_is_pinned_first_then_newest_activity(api, user, other_user):
    now = timezone.now()
    old = DialogueFactory(owner=user, title="old")
    new = DialogueFactory(owner=user, title="new")
    pinned = DialogueFactory(owner=user, title="pinned", pinned=True)
    DialogueFactory(owner=other_user, title="not mine")
    Dialogue.objects.filter(pk=old.pk).update(last_activity_at=now - timedelta(days=2))
    Dialogue.objects.filter(pk=new.pk).update(last_activity_at=now)
    Dialogue.objects.filter(pk=pinned.pk).update(
        last_activity_at=now - timedelta(days=9)
    )

    body = api.get("/api/dialogues/").json()

    assert [d["title"] for d in body["results"]] == ["pinned", "new", "old"]
    assert body["next_cursor"] is None
    assert "snippet" not in body["results"][0]


@pytest.mark.django_db
def test_keyset_pages_are_stable_while_dialogues_arrive(api, user):
    # given 75 dialogues, several sharing the same activity time, 5 of them pinned
    now = timezone.now()
    made = [DialogueFactory(owner=user, title=f"d{i}") for i in range(75)]
    for i, d in enumerate(made):
        Dialogue.objects.filter(pk=d.pk).update(
            last_activity_at=now - timedelta(minutes=i // 3), pinned=i % 15 == 0
        )
    expected = list(
        Dialogue.objects.filter(owner=user)
        .order_by("-pinned", "-last_activity_at", "-id")
        .values_list("id", flat=True)
    )

    # when paging through, with a new dialogue created after the first page
    seen, cursor, pages = [], None, 0
    while True:
        url = "/api/dialogues/" + (f"?cursor={cursor}" if cursor else "")
        body = api.get(url).json()
        seen += [d["id"] for d in body["results"]]
        pages += 1
        if pages == 1:
            DialogueFactory(owner=user, title="newcomer")
        cursor = body["next_cursor"]
        if not cursor:
            break

    # then every dialogue appears once, in order, 30 per page
    assert pages == 3
    assert seen == expected


@pytest.mark.django_db
def test_a_forged_cursor_is_a_bad_request(api):
    for cursor in ["abc", "2.1.1", "1.x.5", "1.99999999999999999999999.1"]:
        response = api.get(f"/api/dialogues/?cursor={cursor}")
        assert response.status_code == 400, cursor


@pytest.mark.django_db
def test_search_finds_titles_and_message_text_with_a_snippet(api, user, other_user):
    by_title = DialogueFactory(owner=user, title="Sourdough starter")
    by_text = DialogueFactory(owner=user, title="Kitchen")
    MessageFactory(
        dialogue=by_text,
        content="First line.\nThe SOURDOUGH needs feeding twice a day.",
    )
    DialogueFactory(owner=user, title="Unrelated")
    theirs = DialogueFactory(owner=other_user, title="sourdough secrets")
    MessageFactory(dialogue=theirs, content="sourdough")

    body = api.get("/api/dialogues/?q=sourdough").json()

    found = {d["id"]: d for d in body["results"]}
    assert set(found) == {by_title.pk, by_text.pk}
    assert found[by_text.pk]["snippet"].startswith("First line. The SOURDOUGH needs")
    assert found[by_title.pk]["snippet"] is None


@pytest.mark.django_db
def test_search_treats_wildcards_literally(api, user):
    d = DialogueFactory(owner=user, title="plain")
    MessageFactory(dialogue=d, content="100% sure")
    DialogueFactory(owner=user, title="other")

    assert [r["id"] for r in api.get("/api/dialogues/?q=100%25").json()["results"]] == [
        d.pk
    ]
    assert api.get("/api/dialogues/?q=_").json()["results"] == []


@pytest.mark.django_db
def test_listing_and_searching_cost_a_fixed_number_of_queries(
    api, user, django_assert_max_num_queries
):
    for i in range(40):
        d = DialogueFactory(owner=user, title=f"dialogue {i}")
        MessageFactory(dialogue=d, content=f"message about apples {i}")
    api.get("/api/dialogues/")  # session warm

    # session + user + one page query
    with django_assert_max_num_queries(3):
        first = api.get("/api/dialogues/").json()
    with django_assert_max_num_queries(3):
        api.get(f"/api/dialogues/?cursor={first['next_cursor']}")
    with django_assert_max_num_queries(3):
        found = api.get("/api/dialogues/?q=apples").json()
    assert len(found["results"]) == 30 and found["next_cursor"]


# --- exports ------------------------------------------------------------------------


@pytest.fixture
def rich_dialogue(user):
    dialogue = DialogueFactory(
        owner=user, title="Export me", system_prompt="Be exact.", model="fake-model"
    )
    MessageFactory(dialogue=dialogue, content="Show me *Python* code, please.")
    reply = MessageFactory(
        dialogue=dialogue,
        role="assistant",
        model="fake-model",
        content="Here it is:\n\n```python\ndef square(x):\n    return x * x\n```\n\n- **bold** point\n",
        prompt_tokens=12,
        completion_tokens=20,
    )
    MessageFactory(dialogue=dialogue, content="Now draw a lighthouse")
    drawing = MessageFactory(dialogue=dialogue, role="assistant", content="")
    image = GeneratedImage.objects.create(
        message=drawing,
        prompt="a lighthouse at dusk",
        storage_key="images/abc.png",
        status="complete",
        width=1024,
        height=1024,
    )
    MessageFactory(dialogue=dialogue, content="unfinished ```code", status="complete")
    return dialogue, reply, image


@pytest.mark.django_db
def test_markdown_export_has_everything_and_fenced_code(api, rich_dialogue):
    dialogue, _, image = rich_dialogue
    GeneratedImage.objects.filter(pk=image.pk).update(storage_key="")

    response = api.get(f"/api/dialogues/{dialogue.pk}/export.md")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="dialogue-{dialogue.pk}.md"'
    )
    text = b"".join(response.streaming_content).decode()
    assert text.startswith("# Export me\n")
    assert "Be exact." in text and "fake-model" in text
    assert "```python\ndef square(x):\n    return x * x\n```" in text
    assert "/images/" not in text  # nothing that needs the site
    assert text.count("### User") == 3 and text.count("### Assistant") == 2
    # an unclosed fence in a message is closed, so fences balance
    assert len(re.findall(r"^```", text, flags=re.M)) % 2 == 0
    # valid Markdown: the parser sees the code block
    from markdown_it import MarkdownIt

    tokens = MarkdownIt().parse(text)
    assert any(t.type == "fence" and t.info == "python" for t in tokens)


@pytest.mark.django_db
def test_markdown_export_with_pictures_is_a_zip_that_reads_offline(api, rich_dialogue):
    # given a dialogue whose picture is stored, and one whose file went missing
    dialogue, _, image = rich_dialogue
    png = b"\x89PNG\r\n\x1a\n" + b"picture bytes" * 50
    key = default_storage.save("images/export-test.png", ContentFile(png))
    GeneratedImage.objects.filter(pk=image.pk).update(storage_key=key)
    drawing = image.message
    lost = GeneratedImage.objects.create(
        message=drawing,
        prompt="a lost boat",
        storage_key="images/never-written.png",
        status="complete",
    )

    # when the owner downloads the Markdown
    response = api.get(f"/api/dialogues/{dialogue.pk}/export.md")

    # then it is a zip of the Markdown and the picture, linked relatively
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="dialogue-{dialogue.pk}.zip"'
    )
    bundle = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    name = f"dialogue-{dialogue.pk}"
    assert sorted(bundle.namelist()) == [
        f"{name}/dialogue.md",
        f"{name}/images/{image.pk}.png",
    ]
    assert bundle.read(f"{name}/images/{image.pk}.png") == png
    text = bundle.read(f"{name}/dialogue.md").decode()
    assert f"![a lighthouse at dusk](images/{image.pk}.png)" in text
    assert "*Image not available (complete): a lost boat*" in text
    assert "/images/" not in text.replace(f"](images/{image.pk}.png)", "")
    assert lost.pk


@pytest.mark.django_db
def test_search_snippets_start_on_a_word_and_show_no_markdown(api, user):
    # given a reply with Markdown, the match far into it
    dialogue = DialogueFactory(owner=user, title="Plants")
    MessageFactory(
        dialogue=dialogue,
        role="assistant",
        content="Some introduction that runs on for a good while before it gets to "
        "the point, which is that **watering** the `ficus` weekly is [enough](http://x).",
    )

    # when the user searches for a word of it
    page = api.get("/api/dialogues/", {"q": "ficus"}).json()

    # then the snippet starts on a whole word after "…" and reads as plain text
    snippet = page["results"][0]["snippet"]
    assert snippet.startswith("…")
    words = [
        "Some",
        "introduction",
        "that",
        "runs",
        "on",
        "for",
        "a",
        "good",
        "while",
        "before",
        "it",
        "gets",
    ]
    assert snippet[1:].split()[0] in words
    assert "watering the ficus weekly is enough." in snippet
    assert not set("*`[]()") & set(snippet)


@pytest.mark.django_db
def test_json_export_parses_and_holds_every_message_and_image(api, rich_dialogue):
    dialogue, reply, image = rich_dialogue

    response = api.get(f"/api/dialogues/{dialogue.pk}/export.json")

    assert response.status_code == 200
    data = json.loads(response.content)
    assert data["dialogue"]["title"] == "Export me"
    assert data["dialogue"]["system_prompt"] == "Be exact."
    assert len(data["messages"]) == 5
    by_content = {m["content"]: m for m in data["messages"]}
    assert by_content[reply.content]["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 20,
        "estimated": False,
    }
    assert reply.content.startswith("Here it is:")
    holder = Message.objects.get(pk=image.message_id)
    images = by_content[holder.content]["images"]
    assert images[0]["prompt"] == "a lighthouse at dusk"
    assert images[0]["status"] == image.status
    assert all(m["created_at"] and m["role"] and m["status"] for m in data["messages"])


# --- context, presets, models, usage ---------------------------------------------------


@pytest.mark.django_db
def test_context_report_over_http(api, user, fake_openai):
    dialogue = DialogueFactory(
        owner=user, model="fake-small", system_prompt="Be brief."
    )
    for i in range(3):
        MessageFactory(dialogue=dialogue, content=f"hi {i}")

    body = api.get(f"/api/dialogues/{dialogue.pk}/context/").json()

    assert body["budget_tokens"] == 2048 - 512
    assert body["included_messages"] == 3 and body["total_messages"] == 3
    assert body["omitted_messages"] == 0 and body["summary_used"] is False
    assert 0 < body["system_tokens"] < body["used_tokens"] <= body["budget_tokens"]


@pytest.mark.django_db
def test_presets_crud_and_isolation(api, user, other_user, fake_openai):
    created = send(
        api,
        "post",
        "/api/presets/",
        {"name": "Translator", "system_prompt": "Translate.", "model": "fake-small"},
    )
    assert created.status_code == 201
    pk = created.json()["id"]
    duplicate = send(api, "post", "/api/presets/", {"name": "Translator"})
    assert duplicate.status_code == 400 and duplicate.json()["error"]["fields"] == {
        "name": "duplicate"
    }
    assert send(api, "post", "/api/presets/", {"name": ""}).status_code == 400
    assert (
        send(api, "post", "/api/presets/", {"name": "x", "model": "nope"}).status_code
        == 400
    )

    updated = send(
        api, "patch", f"/api/presets/{pk}/", {"system_prompt": "Translate to French."}
    )
    assert updated.json()["system_prompt"] == "Translate to French."
    assert [p["name"] for p in api.get("/api/presets/").json()["results"]] == [
        "Translator"
    ]

    theirs = Preset.objects.create(owner=other_user, name="Theirs")
    assert (
        send(api, "patch", f"/api/presets/{theirs.pk}/", {"name": "stolen"}).status_code
        == 404
    )
    assert api.delete(f"/api/presets/{theirs.pk}/").status_code == 404
    assert (
        send(api, "post", "/api/dialogues/", {"preset": theirs.pk}).status_code == 404
    )

    assert api.delete(f"/api/presets/{pk}/").status_code == 204
    assert api.get("/api/presets/").json()["results"] == []
    assert Preset.objects.filter(pk=theirs.pk, name="Theirs").exists()


@pytest.mark.django_db
def test_models_lists_the_configured_models(api, fake_openai):
    body = api.get("/api/models/").json()
    assert body == {
        "models": [
            {"name": "fake-model", "context_tokens": 8192, "vision": False},
            {"name": "fake-small", "context_tokens": 2048, "vision": False},
        ],
        "default": "fake-model",
        "demo": False,
    }


@pytest.mark.django_db
def test_models_says_demo_without_a_provider(api, settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    body = api.get("/api/models/").json()
    assert body["demo"] is True and body["default"] == "offline-demo"


@pytest.mark.django_db
def test_wrong_method_is_a_json_405(api):
    response = api.put("/api/models/", data="{}", content_type="application/json")
    assert response.status_code == 405 and error_code(response) == "method_not_allowed"


@pytest.mark.django_db
def test_usage_endpoint_shape(api, user):
    other = UserFactory()
    MessageFactory(
        dialogue=DialogueFactory(owner=other), role="assistant", completion_tokens=5
    )
    body = api.get("/api/usage/").json()
    assert set(body) == {"today", "quota", "reset_at", "days"}
    assert len(body["days"]) == 14


@pytest.mark.django_db
def test_context_report_of_a_dialogue_on_a_retired_model_gauges_the_default(
    api, user, fake_openai
):
    dialogue = DialogueFactory(owner=user, model="retired-model")

    response = api.get(f"/api/dialogues/{dialogue.pk}/context/")

    assert response.status_code == 200
    assert response.json()["budget_tokens"] == 8192 - 1024
