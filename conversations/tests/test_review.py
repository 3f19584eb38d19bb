"""Users report replies; staff see them in the review queue; flags resolve."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from conversations.exceptions import BadRequest, MessageNotFound
from conversations.models import Flag, Message
from conversations.services.review import flags_resolve, message_report
from tests.factories import DialogueFactory, MessageFactory


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # PBKDF2 costs about a second per user on this machine; nothing here logs in by password.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def reply(dialogue):
    MessageFactory(dialogue=dialogue, content="hello")
    return MessageFactory(
        dialogue=dialogue, role=Message.Role.ASSISTANT, content="rude answer"
    )


def _report_url(message_id: int) -> str:
    return f"/api/messages/{message_id}/report/"


def _post(client, message_id, body, **extra):
    return client.post(
        _report_url(message_id),
        json.dumps(body),
        content_type="application/json",
        **extra,
    )


def test_report_url_is_the_documented_path():
    assert reverse("message-report", args=[7]) == _report_url(7)


@pytest.mark.django_db
def test_a_report_flags_the_reply_and_shows_in_the_review_queue(
    client, admin_client, user, reply
):
    client.force_login(user)

    response = _post(client, reply.pk, {"reason": "It insulted me"})

    assert response.status_code == 201
    flag = Flag.objects.get()
    assert response.json() == {
        "id": flag.pk,
        "message": reply.pk,
        "dialogue": reply.dialogue_id,
    }
    assert (flag.source, flag.created_by, flag.reason) == (
        Flag.Source.USER,
        user,
        "It insulted me",
    )
    reply.refresh_from_db()
    reply.dialogue.refresh_from_db()
    assert reply.flagged and reply.dialogue.flagged

    queue = admin_client.get(reverse("admin:conversations_flag_changelist"))
    assert [f.pk for f in queue.context["cl"].result_list] == [flag.pk]
    assert "It insulted me" in queue.content.decode()


@pytest.mark.django_db
def test_reporting_another_users_message_is_a_404_like_a_missing_one(
    client, other_user, reply
):
    client.force_login(other_user)

    foreign = _post(client, reply.pk, {"reason": "x"})
    missing = _post(client, 10**9, {"reason": "x"})

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert foreign.json()["error"]["code"] == "not_found"
    assert not Flag.objects.exists()
    reply.refresh_from_db()
    assert not reply.flagged


@pytest.mark.django_db
def test_report_requires_the_csrf_token(user, reply):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    refused = _post(client, reply.pk, {"reason": "spam"})
    assert refused.status_code == 403
    assert not Flag.objects.exists()

    token = "a" * 32  # what the chat page's cookie holds: a 32-character secret
    client.cookies["csrftoken"] = token
    accepted = _post(
        client, reply.pk, {"reason": "spam"}, headers={"X-CSRFToken": token}
    )
    assert accepted.status_code == 201


@pytest.mark.django_db
def test_report_needs_a_signed_in_user(client, reply):
    response = _post(client, reply.pk, {"reason": "spam"})

    assert response.status_code == 401
    assert not Flag.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [{}, {"reason": "  "}, {"reason": 5}, {"reason": "x" * 2001}]
)
def test_report_without_a_usable_reason_is_a_bad_request(client, user, reply, body):
    client.force_login(user)

    response = _post(client, reply.pk, body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.django_db
def test_report_body_must_be_a_json_object(client, user, reply):
    client.force_login(user)

    response = client.post(
        _report_url(reply.pk), "nope", content_type="application/json"
    )

    assert response.status_code == 400


@pytest.mark.django_db
def test_report_only_accepts_post(client, user, reply):
    client.force_login(user)

    assert client.get(_report_url(reply.pk)).status_code == 405


@pytest.mark.django_db
def test_reporting_twice_keeps_one_open_report(user, reply):
    first = message_report(user=user, message_id=reply.pk, reason="bad")
    second = message_report(user=user, message_id=reply.pk, reason="still bad")

    assert first.pk == second.pk
    assert Flag.objects.count() == 1


@pytest.mark.django_db
def test_message_report_service_raises_domain_errors(user, other_user, reply):
    with pytest.raises(MessageNotFound):
        message_report(user=other_user, message_id=reply.pk, reason="x")
    with pytest.raises(BadRequest):
        message_report(user=user, message_id=reply.pk, reason="")


@pytest.mark.django_db
def test_resolving_one_of_two_flags_keeps_the_dialogue_flagged(user, reply):
    first = message_report(user=user, message_id=reply.pk, reason="one")
    other_message = MessageFactory(dialogue=reply.dialogue, role=Message.Role.ASSISTANT)
    message_report(user=user, message_id=other_message.pk, reason="two")

    resolved = flags_resolve(flags=[first], resolved_by=None)

    assert resolved == 1
    reply.refresh_from_db()
    reply.dialogue.refresh_from_db()
    assert not reply.flagged
    assert reply.dialogue.flagged


@pytest.mark.django_db
def test_a_resolved_report_can_be_made_again(user, reply):
    first = message_report(user=user, message_id=reply.pk, reason="bad")
    flags_resolve(flags=[first], resolved_by=None)

    second = message_report(user=user, message_id=reply.pk, reason="bad again")

    assert second.pk != first.pk
    reply.refresh_from_db()
    assert reply.flagged


@pytest.mark.django_db
def test_flag_of_a_message_from_another_dialogue_is_refused(user):
    from conversations.services.review import flag_create

    a, b = DialogueFactory(owner=user), DialogueFactory(owner=user)
    message = MessageFactory(dialogue=b)

    with pytest.raises(BadRequest):
        flag_create(
            dialogue=a, message=message, created_by=user, source="staff", reason="x"
        )
