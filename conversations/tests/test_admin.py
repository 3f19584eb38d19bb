"""Staff review in the admin: changelists, search, filters, actions, transcripts and
the review permission."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from conversations.models import (
    Dialogue,
    Flag,
    Message,
    TranscriptView,
    UsageDaily,
    UserQuota,
)
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory, MessageFactory, UserFactory

CHANGELISTS = [
    "admin:conversations_dialogue_changelist",
    "admin:conversations_message_changelist",
    "admin:conversations_flag_changelist",
    "admin:conversations_transcriptview_changelist",
    "admin:conversations_usagedaily_changelist",
    "admin:conversations_userquota_changelist",
    "admin:auth_user_changelist",
]


def _staff(*codenames):
    user = UserFactory(is_staff=True)
    perms = Permission.objects.filter(
        content_type__app_label="conversations", codename__in=codenames
    )
    assert perms.count() == len(codenames)
    user.user_permissions.add(*perms)
    return user


STAFF_PERMS = (
    "view_dialogue",
    "view_message",
    "view_flag",
    "add_flag",
    "change_flag",
    "view_usagedaily",
    "view_userquota",
)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # PBKDF2 costs about a second per user on this machine; nothing here logs in by password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def staff_client(client):
    """A staff member with every model permission but not the review permission."""
    client.force_login(_staff(*STAFF_PERMS))
    return client


@pytest.fixture
def reviewer_client(client):
    client.force_login(_staff(*STAFF_PERMS, "review_dialogue"))
    return client


@pytest.fixture
def transcript(user):
    dialogue = DialogueFactory(owner=user, title="Trip to Lisbon", model="gpt-test")
    MessageFactory(dialogue=dialogue, content="Where should I **eat** quesadillas?")
    MessageFactory(
        dialogue=dialogue,
        role=Message.Role.ASSISTANT,
        content="Try <script>alert(1)</script> [here](javascript:alert(2)) pastéis",
        prompt_tokens=100,
        completion_tokens=20,
    )
    return dialogue


def _results(response):
    return list(response.context["cl"].result_list)


def _ids(response):
    return {obj.pk for obj in _results(response)}


def _changelist(name="dialogue"):
    return reverse(f"admin:conversations_{name}_changelist")


@pytest.mark.django_db
@pytest.mark.parametrize("name", CHANGELISTS)
def test_every_changelist_renders_for_a_superuser(admin_client, transcript, name):
    # given a dialogue, a flag, an audit row, usage and a quota
    Flag.objects.create(dialogue=transcript, source=Flag.Source.USER, reason="rude")
    TranscriptView.objects.create(dialogue=transcript, dialogue_repr="x")
    UsageDaily.objects.create(
        user=transcript.owner, day=timezone.now().date(), messages=2
    )
    UserQuota.objects.create(user=transcript.owner, daily_tokens=1000)

    # when a superuser opens the list, then it renders with rows
    response = admin_client.get(reverse(name))
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("admin:conversations_dialogue_changelist", 200),
        ("admin:conversations_message_changelist", 200),
        ("admin:conversations_flag_changelist", 200),
        ("admin:conversations_usagedaily_changelist", 200),
        ("admin:conversations_userquota_changelist", 200),
        ("admin:conversations_transcriptview_changelist", 403),
        ("admin:auth_user_changelist", 403),
    ],
)
def test_changelists_for_staff_without_review_permission(
    staff_client, transcript, name, status
):
    Flag.objects.create(dialogue=transcript, source=Flag.Source.USER, reason="rude")

    response = staff_client.get(reverse(name))

    assert response.status_code == status
    if status == 200:
        assert "quesadillas" not in response.content.decode()


@pytest.mark.django_db
def test_filters_work_for_staff_without_review_permission(staff_client, transcript):
    MessageFactory(dialogue=transcript, role=Message.Role.ASSISTANT, status="failed")
    params = {
        "owner": transcript.owner.username,
        "status": "problem",
        "model": "gpt-test",
    }

    assert _ids(staff_client.get(_changelist(), params)) == {transcript.pk}


@pytest.mark.django_db
def test_dialogue_list_shows_owner_counts_tokens_and_open_flags(
    admin_client, transcript
):
    Flag.objects.create(dialogue=transcript, source=Flag.Source.STAFF, reason="check")

    response = admin_client.get(_changelist())

    row = _results(response)[0]
    assert (row.message_count, row.tokens_used, row.open_flags) == (2, 120, 1)
    html = response.content.decode()
    assert transcript.owner.username in html and "Trip to Lisbon" in html


@pytest.mark.django_db
def test_search_finds_titles_owners_and_message_text_without_duplicates(
    admin_client, transcript, other_user
):
    other = DialogueFactory(owner=other_user, title="Taxes")
    MessageFactory(dialogue=other, content="deductions")

    assert _ids(admin_client.get(_changelist(), {"q": "lisbon"})) == {transcript.pk}
    assert _ids(admin_client.get(_changelist(), {"q": other_user.username})) == {
        other.pk
    }
    # both messages of the transcript match: still one row
    response = admin_client.get(_changelist(), {"q": "e"})
    assert [d.pk for d in _results(response)].count(transcript.pk) == 1
    assert _ids(admin_client.get(_changelist(), {"q": "pastéis"})) == {transcript.pk}


@pytest.mark.django_db
def test_search_ignores_message_text_for_staff_without_review_permission(
    staff_client, transcript
):
    assert _ids(staff_client.get(_changelist(), {"q": "pastéis"})) == set()
    assert _ids(staff_client.get(_changelist(), {"q": "lisbon"})) == {transcript.pk}


@pytest.mark.django_db
def test_owner_filter_takes_an_exact_username(admin_client, transcript, other_user):
    DialogueFactory(owner=other_user)

    response = admin_client.get(_changelist(), {"owner": transcript.owner.username})

    assert _ids(response) == {transcript.pk}
    assert 'name="owner"' in response.content.decode()  # a text box, not a dropdown


@pytest.mark.django_db
def test_model_filter(admin_client, transcript):
    DialogueFactory(model="other-model")

    assert _ids(admin_client.get(_changelist(), {"model": "gpt-test"})) == {
        transcript.pk
    }


@pytest.mark.django_db
def test_last_activity_date_filter(admin_client, transcript):
    old = DialogueFactory()
    Dialogue.objects.filter(pk=old.pk).update(
        last_activity_at=timezone.now() - timedelta(days=40)
    )
    today = timezone.now().date()

    response = admin_client.get(
        _changelist(),
        {
            "last_activity_at__gte": str(today - timedelta(days=6)),
            "last_activity_at__lt": str(today + timedelta(days=1)),
        },
    )

    assert _ids(response) == {transcript.pk}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("value", "status", "matches"),
    [
        ("problem", Message.Status.FAILED, True),
        ("problem", Message.Status.INTERRUPTED, True),
        ("problem", Message.Status.STOPPED, False),
        ("failed", Message.Status.INTERRUPTED, False),
        ("interrupted", Message.Status.INTERRUPTED, True),
        ("streaming", Message.Status.STREAMING, True),
    ],
)
def test_reply_status_filter(admin_client, transcript, value, status, matches):
    broken = DialogueFactory()
    MessageFactory(dialogue=broken, role=Message.Role.ASSISTANT, status=status)

    ids = _ids(admin_client.get(_changelist(), {"status": value}))

    assert ids == ({broken.pk} if matches else set())


@pytest.mark.django_db
def test_flagged_filter(admin_client, transcript):
    flagged = DialogueFactory(flagged=True)

    assert _ids(admin_client.get(_changelist(), {"flagged__exact": "1"})) == {
        flagged.pk
    }
    assert _ids(admin_client.get(_changelist(), {"flagged__exact": "0"})) == {
        transcript.pk
    }


@pytest.mark.django_db
def test_opening_a_transcript_renders_it_sanitised_and_writes_an_audit_row(
    admin_client, admin_user, transcript
):
    reply = transcript.messages.get(role=Message.Role.ASSISTANT)
    image = GeneratedImage.objects.create(
        message=reply, prompt="a tart", storage_key="img/1.png", status="complete"
    )

    response = admin_client.get(
        reverse("admin:conversations_dialogue_change", args=[transcript.pk])
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "<strong>eat</strong>" in html
    assert "<script>alert(1)" not in html and "javascript:alert(2)" not in html.replace(
        "[here](javascript:alert(2))", ""
    )
    assert f'<img src="/images/{image.pk}/"' in html
    # nothing to edit: no form fields for the messages, no save button
    assert 'name="messages-0-content"' not in html and 'name="_save"' not in html
    view = TranscriptView.objects.get()
    assert (view.viewer, view.dialogue) == (admin_user, transcript)
    assert "Trip to Lisbon" in view.dialogue_repr


@pytest.mark.django_db
def test_staff_without_review_permission_cannot_open_transcripts(
    staff_client, transcript
):
    # the list shows metadata, but no link to the transcript and no text
    listing = staff_client.get(_changelist())
    assert listing.status_code == 200
    assert reverse("admin:conversations_dialogue_change", args=[transcript.pk]) not in (
        listing.content.decode()
    )

    response = staff_client.get(
        reverse("admin:conversations_dialogue_change", args=[transcript.pk])
    )

    assert response.status_code == 403
    assert not TranscriptView.objects.exists()


@pytest.mark.django_db
def test_staff_without_review_permission_see_no_message_text(staff_client, transcript):
    message = transcript.messages.first()

    listing = staff_client.get(_changelist("message"))
    detail = staff_client.get(
        reverse("admin:conversations_message_change", args=[message.pk])
    )

    assert listing.status_code == 200
    assert "quesadillas" not in listing.content.decode()
    assert detail.status_code == 403


@pytest.mark.django_db
def test_reviewer_can_open_a_transcript_and_message(reviewer_client, transcript):
    message = transcript.messages.first()

    dialogue_page = reviewer_client.get(
        reverse("admin:conversations_dialogue_change", args=[transcript.pk])
    )
    message_page = reviewer_client.get(
        reverse("admin:conversations_message_change", args=[message.pk])
    )
    listing = reviewer_client.get(_changelist("message"), {"q": "quesadillas"})

    assert dialogue_page.status_code == 200 and message_page.status_code == 200
    assert "<strong>eat</strong>" in dialogue_page.content.decode()
    assert _ids(listing) == {message.pk}
    assert TranscriptView.objects.count() == 2


@pytest.mark.django_db
def test_message_admin_is_read_only(admin_client, transcript):
    message = transcript.messages.first()
    url = reverse("admin:conversations_message_change", args=[message.pk])

    response = admin_client.post(url, {"content": "rewritten"})

    assert response.status_code == 403
    message.refresh_from_db()
    assert message.content == "Where should I **eat** quesadillas?"
    assert (
        admin_client.get(reverse("admin:conversations_message_add")).status_code == 403
    )


@pytest.mark.django_db
def test_flag_action_asks_for_a_reason_then_flags_the_dialogues(
    admin_client, admin_user, transcript
):
    data = {"action": "flag_selected", "_selected_action": [transcript.pk]}

    # when the action is chosen, then a page asks for the reason
    ask = admin_client.post(_changelist(), data)
    assert ask.status_code == 200 and 'name="reason"' in ask.content.decode()

    done = admin_client.post(
        _changelist(), {**data, "apply": "1", "reason": "harassment"}
    )

    assert done.status_code == 302
    flag = Flag.objects.get()
    assert (flag.dialogue, flag.source, flag.reason, flag.created_by) == (
        transcript,
        Flag.Source.STAFF,
        "harassment",
        admin_user,
    )
    transcript.refresh_from_db()
    assert transcript.flagged


@pytest.mark.django_db
def test_export_json_action_downloads_the_transcripts_and_audits(
    admin_client, transcript
):
    response = admin_client.post(
        _changelist(), {"action": "export_json", "_selected_action": [transcript.pk]}
    )

    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment;")
    payload = json.loads(response.content)
    (exported,) = payload["dialogues"]
    assert exported["title"] == "Trip to Lisbon"
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]
    assert "export json" in TranscriptView.objects.get().dialogue_repr


@pytest.mark.django_db
def test_export_csv_action_writes_one_row_per_message_and_audits(
    admin_client, transcript
):
    response = admin_client.post(
        _changelist(), {"action": "export_csv", "_selected_action": [transcript.pk]}
    )

    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [r["content"] for r in rows][0] == "Where should I **eat** quesadillas?"
    assert len(rows) == 2
    assert TranscriptView.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["export_json", "export_csv"])
def test_staff_without_review_permission_cannot_export(
    staff_client, transcript, action
):
    response = staff_client.post(
        _changelist(), {"action": action, "_selected_action": [transcript.pk]}
    )

    assert response.status_code == 403
    assert not TranscriptView.objects.exists()


@pytest.mark.django_db
def test_staff_flag_from_the_flag_admin_marks_the_message(
    admin_client, admin_user, transcript
):
    message = transcript.messages.last()

    response = admin_client.post(
        reverse("admin:conversations_flag_add"),
        {
            "dialogue": transcript.pk,
            "message": message.pk,
            "reason": "made-up facts",
            "reviewer_notes": "check sources",
        },
    )

    assert response.status_code == 302
    flag = Flag.objects.get()
    assert (flag.source, flag.created_by, flag.reviewer_notes) == (
        Flag.Source.STAFF,
        admin_user,
        "check sources",
    )
    message.refresh_from_db()
    transcript.refresh_from_db()
    assert message.flagged and transcript.flagged


@pytest.mark.django_db
def test_flag_form_refuses_a_message_of_another_dialogue(admin_client, transcript):
    other_message = MessageFactory()

    response = admin_client.post(
        reverse("admin:conversations_flag_add"),
        {"dialogue": transcript.pk, "message": other_message.pk, "reason": "x"},
    )

    assert response.status_code == 200
    assert "belongs to another dialogue" in response.content.decode()
    assert not Flag.objects.exists()


@pytest.mark.django_db
def test_flags_cannot_be_deleted_only_resolved(admin_client, transcript):
    flag = Flag.objects.create(dialogue=transcript, source=Flag.Source.USER, reason="r")

    response = admin_client.post(
        reverse("admin:conversations_flag_delete", args=[flag.pk]), {"post": "yes"}
    )

    assert response.status_code == 403
    assert Flag.objects.filter(pk=flag.pk).exists()


@pytest.mark.django_db
def test_flag_links_on_a_transcript_prefill_the_flag_form(admin_client, transcript):
    message = transcript.messages.last()
    page = admin_client.get(
        reverse("admin:conversations_dialogue_change", args=[transcript.pk])
    )
    add = reverse("admin:conversations_flag_add")
    link = f"{add}?dialogue={transcript.pk}&amp;message={message.pk}"
    assert link in page.content.decode()

    form = admin_client.get(add, {"dialogue": transcript.pk, "message": message.pk})

    assert form.context["adminform"].form.initial == {
        "dialogue": str(transcript.pk),
        "message": str(message.pk),
    }


@pytest.mark.django_db
def test_review_queue_lists_open_flags_by_default_and_resolves_them(
    admin_client, admin_user, transcript
):
    message = transcript.messages.last()
    open_flag = Flag.objects.create(
        dialogue=transcript, message=message, source=Flag.Source.USER, reason="wrong"
    )
    done_flag = Flag.objects.create(
        dialogue=transcript, source=Flag.Source.STAFF, reason="old", resolved=True
    )
    Dialogue.objects.filter(pk=transcript.pk).update(flagged=True)
    Message.objects.filter(pk=message.pk).update(flagged=True)

    queue = admin_client.get(_changelist("flag"))
    assert _ids(queue) == {open_flag.pk}
    assert _ids(admin_client.get(_changelist("flag"), {"state": "all"})) == {
        open_flag.pk,
        done_flag.pk,
    }
    assert _ids(
        admin_client.get(
            _changelist("flag"), {"source__exact": "staff", "state": "all"}
        )
    ) == {done_flag.pk}
    assert _ids(admin_client.get(_changelist("flag"), {"q": "wrong"})) == {open_flag.pk}

    response = admin_client.post(
        _changelist("flag"),
        {"action": "resolve_selected", "_selected_action": [open_flag.pk]},
    )

    assert response.status_code == 302
    open_flag.refresh_from_db()
    assert open_flag.resolved and open_flag.resolved_by == admin_user
    transcript.refresh_from_db()
    message.refresh_from_db()
    assert not transcript.flagged and not message.flagged
    assert _ids(admin_client.get(_changelist("flag"))) == set()


@pytest.mark.django_db
def test_audit_trail_is_for_superusers_only_and_read_only(
    admin_client, reviewer_client, transcript
):
    view = TranscriptView.objects.create(dialogue=transcript, dialogue_repr="x")

    assert reviewer_client.get(_changelist("transcriptview")).status_code == 403
    change = reverse("admin:conversations_transcriptview_change", args=[view.pk])
    assert admin_client.get(change).status_code == 200
    assert admin_client.post(change, {"dialogue_repr": "y"}).status_code == 403
    delete = reverse("admin:conversations_transcriptview_delete", args=[view.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert TranscriptView.objects.get().dialogue_repr == "x"


@pytest.mark.django_db
def test_audit_trail_filters_by_viewer(admin_client, admin_user, transcript, user):
    TranscriptView.objects.create(
        viewer=admin_user, dialogue=transcript, dialogue_repr="a"
    )
    TranscriptView.objects.create(viewer=user, dialogue=transcript, dialogue_repr="b")

    response = admin_client.get(
        _changelist("transcriptview"), {"viewer": user.username}
    )

    assert [v.dialogue_repr for v in _results(response)] == ["b"]


@pytest.mark.django_db
def test_usage_list_filters_by_user_and_day(admin_client, user, other_user):
    today = timezone.now().date()
    mine = UsageDaily.objects.create(user=user, day=today, messages=3, prompt_tokens=10)
    UsageDaily.objects.create(user=other_user, day=today, messages=1)
    UsageDaily.objects.create(user=user, day=today - timedelta(days=30), messages=9)

    by_user = admin_client.get(
        _changelist("usagedaily"),
        {
            "username": user.username,
            "day__gte": str(today),
            "day__lt": str(today + timedelta(1)),
        },
    )
    by_month = admin_client.get(
        _changelist("usagedaily"), {"day__year": today.year, "day__month": today.month}
    )

    assert _ids(by_user) == {mine.pk}
    assert mine.pk in _ids(by_month)


@pytest.mark.django_db
def test_quota_overrides_are_editable_from_the_list(admin_client, user):
    quota = UserQuota.objects.create(user=user)

    response = admin_client.post(
        _changelist("userquota"),
        {
            "form-TOTAL_FORMS": "1",
            "form-INITIAL_FORMS": "1",
            "form-0-id": quota.pk,
            "form-0-daily_tokens": "5000",
            "form-0-daily_messages": "",
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    quota.refresh_from_db()
    assert (quota.daily_tokens, quota.daily_messages) == (5000, None)


@pytest.mark.django_db
def test_user_admin_shows_todays_usage_and_edits_the_quota_inline(admin_client, user):
    UsageDaily.objects.create(
        user=user,
        day=timezone.now().date(),
        messages=4,
        prompt_tokens=30,
        completion_tokens=12,
    )

    listing = admin_client.get(
        reverse("admin:auth_user_changelist"), {"q": user.username}
    )
    assert "4 / 42" in listing.content.decode()

    page = admin_client.get(reverse("admin:auth_user_change", args=[user.pk]))
    assert page.status_code == 200
    assert 'name="chat_quota-0-daily_tokens"' in page.content.decode()


# --- Polish (issue 16): columns that read right, labels, math ------------------------


@pytest.mark.django_db
def test_flagged_reads_as_a_warning_not_as_a_green_tick(admin_client, transcript):
    # given one flagged dialogue with an open flag and one clear dialogue
    Dialogue.objects.filter(pk=transcript.pk).update(flagged=True)
    Flag.objects.create(dialogue=transcript, source=Flag.Source.USER, reason="rude")
    DialogueFactory(title="Quiet one")

    # when the list shows them
    html = admin_client.get(_changelist()).content.decode()

    # then flagged is a red "⚑ flagged" with its open flags, never Django's yes/no icons
    assert '<span class="review-flagged">⚑ flagged · 1 open</span>' in html
    assert '<span class="review-clear">–</span>' in html
    assert "icon-yes.svg" not in html and "icon-no.svg" not in html
    messages = admin_client.get(_changelist("message")).content.decode()
    assert "icon-yes.svg" not in messages and "icon-no.svg" not in messages
    # the dialogue's own page says it the same way
    page = admin_client.get(
        reverse("admin:conversations_dialogue_change", args=[transcript.pk])
    ).content.decode()
    assert '<span class="review-flagged">⚑ flagged · 1 open</span>' in page


@pytest.mark.django_db
def test_the_audit_list_names_the_dialogue_in_one_readable_column(
    admin_client, transcript
):
    TranscriptView.objects.create(dialogue=transcript, dialogue_repr="#1 Trip")
    TranscriptView.objects.create(dialogue=None, dialogue_repr="#2 Gone")

    html = admin_client.get(_changelist("transcriptview")).content.decode()

    assert "dialogue repr" not in html.lower()
    assert ">Dialogue (as it was viewed)</a>" in html
    url = reverse("admin:conversations_dialogue_change", args=[transcript.pk])
    assert f'<a href="{url}">#1 Trip</a>' in html
    assert "#2 Gone <em>(deleted since)</em>" in html


@pytest.mark.django_db
def test_another_version_of_a_reply_is_told_from_an_edited_turn(admin_client, user):
    # given a question with two versions of its reply, and an edited second question
    dialogue = DialogueFactory(owner=user)
    first = MessageFactory(dialogue=dialogue, content="first question")
    MessageFactory(
        dialogue=dialogue,
        parent=first,
        role="assistant",
        content="answer one",
        replaced=True,
    )
    shown = MessageFactory(
        dialogue=dialogue, parent=first, role="assistant", content="answer two"
    )
    old = MessageFactory(
        dialogue=dialogue, parent=shown, content="second question", replaced=True
    )
    MessageFactory(
        dialogue=dialogue,
        parent=old,
        role="assistant",
        content="old answer",
        replaced=True,
    )
    edited = MessageFactory(
        dialogue=dialogue, parent=shown, content="second question, edited"
    )
    MessageFactory(
        dialogue=dialogue, parent=edited, role="assistant", content="new answer"
    )

    html = admin_client.get(
        reverse("admin:conversations_dialogue_change", args=[dialogue.pk])
    ).content.decode()

    # then the other reply is a version of the reply, the edited turn is off the branch
    sibling = "(another version of this reply, not on the shown branch)"
    off = "(not on the shown branch)"
    assert html.count(sibling) == 1 and html.count(off) == 2
    assert html.index(sibling) < html.index("answer one") < html.index(off)


@pytest.mark.django_db
def test_transcripts_load_katex_and_keep_math_as_tex_placeholders(admin_client, user):
    dialogue = DialogueFactory(owner=user)
    MessageFactory(dialogue=dialogue, role="assistant", content="So $x^2$ and `$y$`.")

    html = admin_client.get(
        reverse("admin:conversations_dialogue_change", args=[dialogue.pk])
    ).content.decode()

    assert '<span class="math-tex">x^2</span>' in html
    assert "<code>$y$</code>" in html
    assert "vendor/katex/katex.min.js" in html and "vendor/katex/katex.min.css" in html
    assert 'src="/static/js/math-page.js" type="module"' in html


@pytest.mark.django_db
def test_admin_pages_name_the_site_icon_and_favicon_ico_redirects_to_it(
    admin_client, client
):
    html = admin_client.get(_changelist()).content.decode()
    assert 'rel="icon" href="/static/favicon.svg"' in html
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"] == "/static/favicon.svg"


@pytest.mark.django_db
def test_the_dialogue_list_fits_in_few_columns(admin_client, transcript):
    response = admin_client.get(_changelist())
    headers = [h["text"] for h in response.context["result_headers"]]
    # the checkbox column plus eight: flagged and open flags share one
    assert len(headers) == 9
    assert "review" in headers and "flagged" not in headers
