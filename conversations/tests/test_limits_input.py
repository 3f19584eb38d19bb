"""Bad input is cheap, and the sliding-window rate limits (issue 14, items 4 and 5)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from chatsite.logging import RepeatFilter
from conversations.exceptions import RateLimited
from conversations.models import Dialogue, Flag, Message
from conversations.realtime.resp import Address, Connection
from conversations.realtime.store import MemoryStore, RedisStore
from conversations.services.usage import rate_limit_hit, sliding_window_retry
from tests.factories import DialogueFactory, MessageFactory

# --- NUL and lone surrogates: bad_request before any work, no traceback -------------

BAD_FRAMES = [
    # JSON escapes carry what a websocket text frame cannot: NUL, lone surrogates.
    '{"type":"message.send","dialogue":null,"content":"hi","client_id":"a\\u0000b"}',
    '{"type":"message.send","dialogue":null,"content":"x\\ud800y","client_id":"c1"}',
    '{"type":"message.send","dialogue":null,"content":"hi","client_id":"\\udfff"}',
    '{"type":"message.send","dialogue":null,"content":"hi","client_id":"c2",'
    '"extra":{"k\\u0000":["\\ud83d"]}}',
    '{"type":"dialogue.open","dialogue":' + "[" * 5000 + "]" * 5000 + "}",
]


@database_sync_to_async
def message_count():
    return Message.objects.count()


@pytest.mark.django_db(transaction=True)
async def test_invalid_text_in_a_frame_is_a_bad_request_without_a_traceback(
    user, fake_openai, socket_for, caplog
):
    caplog.set_level(logging.INFO)
    async with socket_for(user) as ws:
        for frame in BAD_FRAMES:
            await ws.send_text(frame)
            reply = await ws.recv()
            assert reply["type"] == "error", frame
            assert reply["code"] == "bad_request", (frame, reply)
        await ws.send({"type": "ping"})
        assert (await ws.recv())["type"] == "pong"
    assert await message_count() == 0
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def api(user):
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def _post(client, url, body):
    return client.post(url, data=body, content_type="application/json")


@pytest.mark.parametrize(
    "body",
    [
        '{"title": "a\\u0000b"}',
        '{"system_prompt": "x\\ud800"}',
        '{"title": "ok", "model": "\\udc00"}',
        '{"title": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
)
def test_the_json_api_answers_invalid_text_with_a_json_400(api, body):
    response = _post(api, "/api/dialogues/", body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "bad_request"
    assert not Dialogue.objects.exists()


def test_a_nul_in_the_query_string_is_a_json_400(api):
    response = api.get("/api/dialogues/", {"q": "a\x00b"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


def test_a_report_with_invalid_text_is_a_json_400(api, user):
    message = MessageFactory(dialogue=DialogueFactory(owner=user))
    response = _post(
        api, f"/api/messages/{message.pk}/report/", '{"reason": "spam\\u0000"}'
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert not Flag.objects.exists()


def test_the_log_keeps_a_few_records_of_the_same_kind_per_period():
    now = [0.0]
    flt = RepeatFilter(burst=3, period=60, clock=lambda: now[0])

    def record(msg="frame handling failed"):
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, (), None)

    passed = [flt.filter(record()) for _ in range(100)]
    assert passed.count(True) == 3
    assert flt.filter(record("another message"))
    now[0] = 61.0
    first = record()
    assert flt.filter(first)
    assert "97 more like this dropped" in first.getMessage()


# --- Sliding windows -----------------------------------------------------------------


def test_sliding_window_allows_at_most_the_limit_in_any_window():
    stamps: list[float] = []
    accepted = []
    # 40 attempts in 1.7 s across a minute boundary (59.0 s .. 60.7 s).
    for i in range(40):
        now = 59.0 + i * 1.7 / 39
        if sliding_window_retry(stamps, now=now, limit=20, window=60) == 0:
            stamps.append(now)
            accepted.append(now)
    assert len(accepted) == 20
    assert sliding_window_retry(stamps, now=60.7, limit=20, window=60) == 59
    assert sliding_window_retry(stamps, now=119.1, limit=20, window=60) == 0


async def _store_accepts(store, key, times):
    return [await store.rate_hit(key, 20, 60, now=t) for t in times]


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_send_rate_limit_is_a_sliding_window_across_a_minute_boundary(
    kind, settings
):
    if kind == "redis":
        url = settings.REDIS_URL or "redis://127.0.0.1:6379/0"
        store = RedisStore(Connection(Address.from_url(url)), settings.CHAT_LIVE_PREFIX)
    else:
        store = MemoryStore()
    key = f"send:test-{kind}-{datetime.now(UTC).timestamp()}"
    base = (int(datetime.now(UTC).timestamp()) // 60 + 1) * 60 - 1.0  # 1 s to :00
    times = [base + i * 1.7 / 39 for i in range(40)]
    waits = await _store_accepts(store, key, times)
    assert waits.count(0) == 20, "at most 20 in any minute, boundary or not"
    assert all(1 <= w <= 60 for w in waits if w)
    # A minute after the first ones, room again.
    assert await store.rate_hit(key, 20, 60, now=base + 60.1) == 0


@pytest.mark.django_db
def test_rate_limit_hit_counts_per_user_and_action_in_a_sliding_hour(user):
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def hit(at, action="report"):
        rate_limit_hit(
            user=user,
            action=action,
            limit=3,
            window=3600,
            message="wait {retry}",
            now=at,
        )

    for minutes in (0, 10, 20):
        hit(start + timedelta(minutes=minutes))
    with pytest.raises(RateLimited) as refused:
        hit(start + timedelta(minutes=59))
    assert refused.value.extra["retry_after"] == 60
    hit(start + timedelta(minutes=59), action="dialogue")  # its own window
    hit(start + timedelta(minutes=60, seconds=1))  # the first left the hour
    with pytest.raises(RateLimited):
        hit(start + timedelta(minutes=60, seconds=2))


def test_reports_are_rate_limited(api, user, settings):
    settings.CHAT_REPORTS_PER_HOUR = 3
    dialogue = DialogueFactory(owner=user)
    messages = [MessageFactory(dialogue=dialogue) for _ in range(5)]
    codes = [
        _post(
            api, f"/api/messages/{m.pk}/report/", json.dumps({"reason": "bad"})
        ).status_code
        for m in messages
    ]
    assert codes == [201, 201, 201, 429, 429]
    assert Flag.objects.count() == 3


def test_dialogue_creation_is_rate_limited(api, settings):
    settings.CHAT_DIALOGUES_PER_HOUR = 2
    responses = [_post(api, "/api/dialogues/", "{}") for _ in range(4)]
    assert [r.status_code for r in responses] == [201, 201, 429, 429]
    assert responses[2].json()["error"]["code"] == "rate_limited"
    assert responses[2].json()["error"]["retry_after"] > 0
    assert Dialogue.objects.count() == 2
