"""The admin lists cost a fixed number of queries, whatever the number of rows."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from conversations.models import Dialogue, Flag, Message, UsageDaily
from tests.factories import UserFactory

# session, user, the page's count, the page, the "model" filter's distinct values,
# and a little headroom for Django internals; never a query per row.
MAX_QUERIES = 8


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _populate(n_dialogues: int, owners: int = 20) -> None:
    users = [UserFactory() for _ in range(owners)]
    dialogues = Dialogue.objects.bulk_create(
        Dialogue(owner=users[i % owners], title=f"dialogue {i}", model=f"model-{i % 3}")
        for i in range(n_dialogues)
    )
    Message.objects.bulk_create(
        Message(
            dialogue=d,
            user_id=d.owner_id,
            role=role,
            content=f"turn {k} of {d.pk}",
            status=Message.Status.FAILED if (d.pk % 7 == 0 and k == 2) else "complete",
            prompt_tokens=10 if role == "assistant" else None,
            completion_tokens=5 if role == "assistant" else None,
        )
        for d in dialogues
        for k, role in enumerate(["user", "assistant", "assistant"])
    )
    Flag.objects.bulk_create(
        Flag(dialogue=d, source=Flag.Source.USER, reason="r") for d in dialogues[::10]
    )
    UsageDaily.objects.bulk_create(
        UsageDaily(user=u, day=timezone.now().date(), messages=3) for u in users
    )


def _count_queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, params or {})
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": "dialogue 99"},
        {"q": "turn"},
        {"status": "problem"},
        {"flagged__exact": "0", "model": "model-1"},
        {"o": "5"},  # sorted by message count
    ],
)
def test_dialogue_changelist_queries_are_bounded_for_1000_dialogues(
    admin_client, django_assert_max_num_queries, params
):
    _populate(10)
    small = _count_queries(
        admin_client, reverse("admin:conversations_dialogue_changelist"), params
    )
    _populate(990)

    with django_assert_max_num_queries(MAX_QUERIES):
        response = admin_client.get(
            reverse("admin:conversations_dialogue_changelist"), params
        )

    assert response.status_code == 200
    big = _count_queries(
        admin_client, reverse("admin:conversations_dialogue_changelist"), params
    )
    assert big == small


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    [
        "admin:conversations_message_changelist",
        "admin:conversations_flag_changelist",
        "admin:conversations_usagedaily_changelist",
        "admin:conversations_transcriptview_changelist",
        "admin:conversations_userquota_changelist",
        "admin:auth_user_changelist",
    ],
)
def test_other_changelists_are_bounded_too(
    admin_client, django_assert_max_num_queries, name
):
    _populate(1000)

    with django_assert_max_num_queries(MAX_QUERIES):
        response = admin_client.get(reverse(name))

    assert response.status_code == 200


@pytest.mark.django_db
def test_a_transcript_costs_the_same_queries_for_3_or_300_messages(admin_client):
    _populate(2)
    dialogue = Dialogue.objects.first()
    url = reverse("admin:conversations_dialogue_change", args=[dialogue.pk])
    admin_client.get(url)  # warm the content-type and session caches
    small = _count_queries(admin_client, url)
    Message.objects.bulk_create(
        Message(
            dialogue=dialogue, user_id=dialogue.owner_id, role="user", content=f"m{i}"
        )
        for i in range(297)
    )

    assert _count_queries(admin_client, url) == small
