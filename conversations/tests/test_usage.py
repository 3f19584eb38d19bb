"""Usage per user per day and the daily quotas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from conversations.exceptions import QuotaExceeded
from conversations.models import Message, UsageDaily, UserQuota
from conversations.serializers import message_dict
from conversations.services.usage import (
    quota_check,
    reset_at,
    usage_record,
    usage_record_image,
    usage_summary,
)
from conversations.tokens import count_tokens
from tests.factories import DialogueFactory, MessageFactory


def reply(dialogue, **fields):
    defaults = {
        "role": Message.Role.ASSISTANT,
        "content": "A reply of some words.",
        "model": "gpt-4o",
    }
    return MessageFactory(dialogue=dialogue, **{**defaults, **fields})


def today_row(user):
    return UsageDaily.objects.get(user=user, day=datetime.now(UTC).date())


@pytest.mark.django_db
def test_provider_usage_is_added_to_the_day(dialogue, user):
    usage_record(message=reply(dialogue, prompt_tokens=100, completion_tokens=20))
    usage_record(message=reply(dialogue, prompt_tokens=150, completion_tokens=30))

    row = today_row(user)
    assert (row.messages, row.prompt_tokens, row.completion_tokens) == (2, 250, 50)


@pytest.mark.django_db
def test_without_provider_usage_tokens_are_counted_and_stored_on_the_message(
    dialogue, user
):
    message = reply(dialogue, content="Counted with the real tokenizer, offline.")

    usage_record(message=message, prompt_tokens=321)

    message.refresh_from_db()
    assert message.completion_tokens == count_tokens(message.content, model="gpt-4o")
    assert message.prompt_tokens == 321
    row = today_row(user)
    assert (row.messages, row.prompt_tokens, row.completion_tokens) == (
        1,
        321,
        message.completion_tokens,
    )


@pytest.mark.django_db
def test_recording_is_one_upsert(dialogue, user, django_assert_num_queries):
    message = reply(dialogue, prompt_tokens=1, completion_tokens=1)
    usage_record(message=message)
    with django_assert_num_queries(1):
        usage_record(message=message)
    with django_assert_num_queries(1):
        usage_record_image(user=user)
    row = today_row(user)
    assert (row.messages, row.images) == (2, 1)


@pytest.mark.django_db
def test_no_quota_configured_never_refuses(
    user, settings, django_assert_max_num_queries
):
    settings.QUOTA_DAILY_TOKENS = 0
    settings.QUOTA_DAILY_MESSAGES = 0
    UsageDaily.objects.create(
        user=user, day=datetime.now(UTC).date(), messages=10**6, prompt_tokens=10**9
    )
    with django_assert_max_num_queries(1):
        quota_check(user=user)


@pytest.mark.django_db
def test_token_quota_reached_raises_with_the_reset_time(
    dialogue, user, settings, django_assert_max_num_queries
):
    # given a daily token quota of 100 and 60 + 40 tokens used today
    settings.QUOTA_DAILY_TOKENS = 100
    usage_record(message=reply(dialogue, prompt_tokens=50, completion_tokens=10))
    with django_assert_max_num_queries(2):
        quota_check(user=user)  # 60 < 100: fine
    usage_record(message=reply(dialogue, prompt_tokens=30, completion_tokens=10))

    # when checked again
    with pytest.raises(QuotaExceeded) as caught:
        quota_check(user=user)

    # then it is refused, with the next UTC midnight as reset time
    error = caught.value.as_dict()
    assert error["code"] == "quota_exceeded"
    reset = datetime.fromisoformat(error["reset_at"])
    assert reset.tzinfo is not None and reset.utcoffset() == timedelta(0)
    assert (reset.hour, reset.minute, reset.second) == (0, 0, 0)
    assert timedelta(0) < reset - datetime.now(UTC) <= timedelta(days=1)
    assert "100" in error["message"]


@pytest.mark.django_db
def test_message_quota_reached_raises(dialogue, user, settings):
    settings.QUOTA_DAILY_MESSAGES = 2
    usage_record(message=reply(dialogue, prompt_tokens=1, completion_tokens=1))
    quota_check(user=user)
    usage_record(message=reply(dialogue, prompt_tokens=1, completion_tokens=1))
    with pytest.raises(QuotaExceeded):
        quota_check(user=user)


@pytest.mark.django_db
def test_per_user_override_beats_the_settings(dialogue, user, other_user, settings):
    # given a generous site quota and a tight override for one user
    settings.QUOTA_DAILY_MESSAGES = 100
    UserQuota.objects.create(user=user, daily_messages=1)
    usage_record(message=reply(dialogue, prompt_tokens=1, completion_tokens=1))
    other_dialogue = DialogueFactory(owner=other_user)
    usage_record(message=reply(other_dialogue, prompt_tokens=1, completion_tokens=1))

    # then only the overridden user is refused
    with pytest.raises(QuotaExceeded):
        quota_check(user=user)
    quota_check(user=other_user)


@pytest.mark.django_db
def test_override_of_zero_lifts_the_site_quota(dialogue, user, settings):
    settings.QUOTA_DAILY_MESSAGES = 1
    UserQuota.objects.create(user=user, daily_messages=0)
    usage_record(message=reply(dialogue, prompt_tokens=1, completion_tokens=1))
    quota_check(user=user)


@pytest.mark.django_db
def test_yesterdays_usage_does_not_count_today(user, settings):
    settings.QUOTA_DAILY_MESSAGES = 1
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    UsageDaily.objects.create(user=user, day=yesterday, messages=50)
    quota_check(user=user)


@pytest.mark.django_db
def test_usage_summary_has_today_quota_and_14_days(dialogue, user, settings):
    settings.QUOTA_DAILY_TOKENS = 5000
    settings.QUOTA_DAILY_MESSAGES = 0
    today = datetime.now(UTC).date()
    UsageDaily.objects.create(
        user=user, day=today - timedelta(days=3), messages=4, prompt_tokens=40
    )
    UsageDaily.objects.create(user=user, day=today - timedelta(days=30), messages=9)
    usage_record(message=reply(dialogue, prompt_tokens=7, completion_tokens=3))
    usage_record_image(user=user)

    summary = usage_summary(user=user)

    assert summary["today"] == {
        "messages": 1,
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "estimated_tokens": 0,
        "images": 1,
    }
    assert summary["quota"] == {
        "daily_tokens": 5000,
        "daily_messages": None,
        "daily_images": None,
    }
    assert summary["reset_at"] == reset_at().isoformat()
    days = summary["days"]
    assert len(days) == 14 and days[-1]["day"] == today.isoformat()
    assert days[-4] == {
        "day": (today - timedelta(days=3)).isoformat(),
        "messages": 4,
        "prompt_tokens": 40,
        "completion_tokens": 0,
        "estimated_tokens": 0,
        "images": 0,
    }
    assert sum(d["messages"] for d in days) == 5


@pytest.mark.django_db
def test_usage_the_server_did_not_report_is_marked_estimated(dialogue, user):
    # given one reply with the server's usage and one without (counted by us)
    usage_record(message=reply(dialogue, prompt_tokens=7, completion_tokens=3))
    counted = usage_record(message=reply(dialogue), prompt_tokens=50)

    # then the counted one is marked, on the message and in the day's totals
    counted.refresh_from_db()
    assert counted.usage_estimated and counted.prompt_tokens == 50
    assert message_dict(counted)["usage"]["estimated"] is True
    row = today_row(user)
    assert row.estimated_tokens == 50 + counted.completion_tokens
    assert usage_summary(user=user)["today"]["estimated_tokens"] == row.estimated_tokens


@pytest.mark.django_db
def test_usage_over_http_is_the_users_own(dialogue, user, other_user):
    usage_record(message=reply(dialogue, prompt_tokens=7, completion_tokens=3))
    usage_record(
        message=reply(
            DialogueFactory(owner=other_user), prompt_tokens=999, completion_tokens=999
        )
    )
    client = Client()
    client.force_login(user)

    body = client.get("/api/usage/").json()

    assert body["today"]["prompt_tokens"] == 7 and body["today"]["messages"] == 1
