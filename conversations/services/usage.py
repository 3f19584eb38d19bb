"""Usage per user per UTC day, the daily quotas checked before any model call, and the
sliding-window rate limits of the synchronous paths (reports, dialogue creation)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from ..exceptions import QuotaExceeded, RateLimited
from ..models import Message, RateEvent, UsageDaily, UserQuota
from ..tokens import count_tokens

HISTORY_DAYS = 14


def _today() -> date:
    return datetime.now(UTC).date()


def reset_at() -> datetime:
    """The next UTC midnight, when the daily counters start again."""
    return datetime.combine(_today() + timedelta(days=1), time.min, tzinfo=UTC)


def _bump(
    user_id: int,
    *,
    messages: int = 0,
    prompt: int = 0,
    completion: int = 0,
    estimated: int = 0,
    images: int = 0,
) -> None:
    # One statement whoever else writes the same row at the same moment (both
    # PostgreSQL and SQLite speak INSERT .. ON CONFLICT .. DO UPDATE).
    table = connection.ops.quote_name(UsageDaily._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} AS u (user_id, day, messages, prompt_tokens, completion_tokens, estimated_tokens, images) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (user_id, day) DO UPDATE SET "
            "messages = u.messages + EXCLUDED.messages, "
            "prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens, "
            "completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens, "
            "estimated_tokens = u.estimated_tokens + EXCLUDED.estimated_tokens, "
            "images = u.images + EXCLUDED.images",
            [user_id, _today(), messages, prompt, completion, estimated, images],
        )


_COLUMNS = {
    "messages": "messages",
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "estimated": "estimated_tokens",
    "images": "images",
}


def _adjust(user_id: int, **deltas: int) -> None:
    """`_bump` with deltas of either sign: a settled reservation can give back. The
    insert of an upsert must satisfy the columns' checks, so what goes down is an
    UPDATE of its own (never below zero)."""
    up = {name: value for name, value in deltas.items() if value > 0}
    down = {name: value for name, value in deltas.items() if value < 0}
    if up or not down:
        _bump(user_id, **up)
    if down:
        table = connection.ops.quote_name(UsageDaily._meta.db_table)
        # CASE rather than GREATEST: SQLite (`make run`) has no GREATEST.
        sets = ", ".join(
            f"{c} = CASE WHEN {c} + %s < 0 THEN 0 ELSE {c} + %s END"
            for c in (_COLUMNS[name] for name in down)
        )
        values = [v for value in down.values() for v in (value, value)]
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {sets} WHERE user_id = %s AND day = %s",  # noqa: S608
                [*values, user_id, _today()],
            )


def usage_record(
    *,
    message: Message,
    prompt_tokens: int | None = None,
    reserved: Reservation | None = None,
) -> Message:
    """Count one finished reply (call once, whatever its final status).

    The provider's usage on the message wins; otherwise the completion is counted
    with the model's tokenizer and the prompt is `prompt_tokens` (pass the context
    report's `used_tokens`). Counted values are stored on the message too, which is
    then marked `usage_estimated`, and the day's `estimated_tokens` say how much of
    its total the server did not report. What a `reserved` reservation counted
    before the reply ran is settled: only the difference is added.
    """
    fill: dict[str, Any] = {}
    if message.completion_tokens is None:
        fill["completion_tokens"] = count_tokens(message.content, model=message.model)
    if message.prompt_tokens is None and prompt_tokens is not None:
        fill["prompt_tokens"] = prompt_tokens
    if fill and not message.usage_estimated:
        fill["usage_estimated"] = True
    if fill:
        Message.objects.filter(pk=message.pk).update(**fill)
        for name, value in fill.items():
            setattr(message, name, value)
    prompt = message.prompt_tokens or 0
    completion = message.completion_tokens or 0
    held = reserved or Reservation()
    _adjust(
        message.user_id,
        messages=1 - held.messages,
        prompt=prompt - held.prompt_tokens,
        completion=completion - held.completion_tokens,
        estimated=prompt + completion if message.usage_estimated else 0,
    )
    return message


def usage_record_image(*, user: Any) -> None:
    _bump(user.pk, images=1)


def quota_limits(
    *, user: Any, override: dict[str, Any] | None = None
) -> dict[str, int | None]:
    """{"daily_tokens", "daily_messages", "daily_images"}; None means unlimited.
    `override`: the user's UserQuota values when already read (a missing key is read
    here)."""
    names = ("daily_tokens", "daily_messages", "daily_images")
    if override is None or any(name not in override for name in names):
        stored = UserQuota.objects.filter(user_id=user.pk).values(*names).first() or {}
        override = {**stored, **(override or {})}
    limits: dict[str, int | None] = {}
    for name, default in (
        ("daily_tokens", settings.QUOTA_DAILY_TOKENS),
        ("daily_messages", settings.QUOTA_DAILY_MESSAGES),
        ("daily_images", settings.QUOTA_DAILY_IMAGES),
    ):
        value = override.get(name)
        limits[name] = (default if value is None else value) or None  # 0: unlimited
    return limits


def _today_row(user: Any) -> dict[str, int]:
    fields = ("messages", "prompt_tokens", "completion_tokens", "images")
    row = (
        UsageDaily.objects.filter(user_id=user.pk, day=_today()).values(*fields).first()
    )
    return {name: int(row[name]) if row else 0 for name in fields}


def _refusal(
    limits: dict[str, int | None], today: dict[str, int], *, image: bool = False
) -> QuotaExceeded | None:
    """Why one more reply (or picture) is refused today, if it is."""
    when = reset_at()
    tokens = today["prompt_tokens"] + today["completion_tokens"]
    spent = (
        [("daily_images", today["images"], "pictures")]
        if image
        else [
            ("daily_tokens", tokens, "tokens"),
            ("daily_messages", today["messages"], "replies"),
        ]
    )
    for name, used, what in spent:
        limit = limits[name]
        if limit is not None and used >= limit:
            return QuotaExceeded(
                f"You have used your {limit:,} {what} for today. "
                f"The allowance resets at {when:%H:%M} UTC.",
                reset_at=when.isoformat(),
            )
    return None


def quota_check(
    *, user: Any, override: dict[str, Any] | None = None, image: bool = False
) -> None:
    """Raise QuotaExceeded (with `reset_at`) when today's tokens or replies (or, for
    a picture, images) reached the user's limit. A cheap early answer; what holds
    under concurrency is `quota_reserve` when the turn is stored."""
    limits = quota_limits(user=user, override=override)
    if all(value is None for value in limits.values()):
        return
    refusal = _refusal(limits, _today_row(user), image=image)
    if refusal is not None:
        raise refusal


# --- Reservations: counted before the model is asked, settled after -------------------


@dataclass(frozen=True)
class _UserId:
    pk: int


@dataclass(frozen=True)
class Reservation:
    """What was counted for a reply before it ran; `usage_record` adds the rest."""

    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _locked_today(user_id: int) -> dict[str, int]:
    """Today's row, created if missing and locked until the caller's transaction
    ends: one user's concurrent reservations take turns here."""
    _bump(user_id)
    fields = ("messages", "prompt_tokens", "completion_tokens", "images")
    row = (
        UsageDaily.objects.select_for_update()
        .filter(user_id=user_id, day=_today())
        .values(*fields)
        .get()
    )
    return {name: int(row[name]) for name in fields}


def quota_reserve(
    *, user_id: int, image: bool = False, override: dict[str, Any] | None = None
) -> None:
    """Count a turn as it is stored, in the caller's transaction: one of the day's
    replies, or for a picture one of its images. `QuotaExceeded` when none is left
    (or no token is): of 5 concurrent sends against a quota of 3, 3 are stored."""
    limits = quota_limits(user=_UserId(user_id), override=override)
    kind = {"images": 1} if image else {"messages": 1}
    relevant = ("daily_images",) if image else ("daily_tokens", "daily_messages")
    if all(limits[name] is None for name in relevant):
        _bump(user_id, **kind)
        return
    with transaction.atomic():
        refusal = _refusal(limits, _locked_today(user_id), image=image)
        if refusal is not None:
            raise refusal
        _bump(user_id, **kind)


def quota_reserve_tokens(
    *, user_id: int, prompt_tokens: int, cap: int
) -> tuple[int, Reservation]:
    """Before the model is asked, for a turn `quota_reserve` counted: the reply's
    `max_tokens`, at most `cap` and no more than what the day's token quota leaves
    after the prompt, and the reservation (prompt and `max_tokens` are counted now;
    `usage_record` settles them). `QuotaExceeded` when nothing is left."""
    limit = quota_limits(user=_UserId(user_id))["daily_tokens"]
    if limit is None:
        return cap, Reservation(messages=1)
    with transaction.atomic():
        today = _locked_today(user_id)
        left = limit - today["prompt_tokens"] - today["completion_tokens"]
        left -= prompt_tokens
        if left <= 0:
            when = reset_at()
            raise QuotaExceeded(
                f"You have used your {limit:,} tokens for today. "
                f"The allowance resets at {when:%H:%M} UTC.",
                reset_at=when.isoformat(),
            )
        allowed = min(cap, left)
        _bump(user_id, prompt=prompt_tokens, completion=allowed)
    return allowed, Reservation(1, prompt_tokens, allowed)


def quota_reserve_image(*, user_id: int) -> None:
    """One picture a tool makes: counted now, refused (`QuotaExceeded`) when the
    day's images are spent; `usage_refund_image` if it fails."""
    quota_reserve(user_id=user_id, image=True)


def usage_refund_image(*, user_id: int) -> None:
    _adjust(user_id, images=-1)


def usage_summary(*, user: Any) -> dict[str, Any]:
    """Today's totals, the quotas, the reset time and the last 14 days, oldest first."""
    from ..selectors import usage_for_user

    today = _today()
    rows = {row["day"]: row for row in usage_for_user(user=user, days=HISTORY_DAYS)}
    empty = {
        "messages": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        # of the two above, counted by us because the server did not report them
        "estimated_tokens": 0,
        "images": 0,
    }
    days = []
    for offset in range(HISTORY_DAYS - 1, -1, -1):
        day = today - timedelta(days=offset)
        row = rows.get(day, empty)
        days.append({"day": day.isoformat(), **{k: row[k] for k in empty}})
    return {
        "today": {k: v for k, v in days[-1].items() if k != "day"},
        "quota": quota_limits(user=user),
        "reset_at": reset_at().isoformat(),
        "days": days,
    }


# --- Sliding-window rate limits of synchronous paths -------------------------------


def sliding_window_retry(
    stamps: list[float], *, now: float, limit: int, window: float
) -> int:
    """Seconds until one more action is allowed when at most `limit` may fall in any
    `window` seconds and `stamps` (ascending) are the earlier ones; 0: allowed now."""
    recent = [t for t in stamps if t > now - window]
    if len(recent) < limit:
        return 0
    # The action that must leave the window first: the oldest of the last `limit`.
    return max(1, math.ceil(recent[-limit] + window - now))


def rate_limit_hit(
    *,
    user: Any,
    action: str,
    limit: int,
    window: float,
    message: str,
    now: datetime | None = None,
) -> None:
    """Count one `action` of the user, or raise `RateLimited` (with `retry_after`)
    when `limit` of them fell in the last `window` seconds (0: no limit). The user's
    row is locked for the count, so concurrent requests cannot all slip through."""
    if limit <= 0:
        return
    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=window)
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=user.pk).exists()
        events = RateEvent.objects.filter(user_id=user.pk, action=action)
        events.filter(at__lte=since).delete()
        stamps = [at.timestamp() for at in events.values_list("at", flat=True)]
        retry = sliding_window_retry(
            stamps, now=now.timestamp(), limit=limit, window=window
        )
        if retry:
            raise RateLimited(message.format(retry=retry), retry_after=retry)
        RateEvent.objects.create(user_id=user.pk, action=action, at=now)


def report_rate_hit(*, user: Any, now: datetime | None = None) -> None:
    rate_limit_hit(
        user=user,
        action=RateEvent.Action.REPORT,
        limit=settings.CHAT_REPORTS_PER_HOUR,
        window=3600,
        message="You have sent many reports. Try again in {retry} seconds.",
        now=now,
    )


def dialogue_create_rate_hit(*, user: Any, now: datetime | None = None) -> None:
    rate_limit_hit(
        user=user,
        action=RateEvent.Action.DIALOGUE,
        limit=settings.CHAT_DIALOGUES_PER_HOUR,
        window=3600,
        message="You are creating dialogues too fast. Try again in {retry} seconds.",
        now=now,
    )
