"""Reads, always scoped to a user: another user's dialogue is as missing as no dialogue."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, OuterRef, Q, Subquery, TextField, Value
from django.db.models.functions import Concat, Greatest, Lower, StrIndex, Substr

from .exceptions import BadRequest, DialogueNotFound, PresetNotFound, ShareNotFound
from .models import Dialogue, Message, Preset, Share, UsageDaily, UserQuota
from .serializers import with_attachments, with_images


def _check_dialogue_id(dialogue_id: Any) -> None:
    """Only a positive integer can name a dialogue; anything else is not found."""
    if (
        not isinstance(dialogue_id, int)
        or isinstance(dialogue_id, bool)
        or dialogue_id <= 0
    ):
        raise DialogueNotFound()


def dialogue_get_for_user(*, dialogue_id: Any, user: Any) -> Dialogue:
    """The user's dialogue; `DialogueNotFound` for a missing one and a foreign one alike."""
    _check_dialogue_id(dialogue_id)
    try:
        return Dialogue.objects.get(pk=dialogue_id, owner=user)
    except Dialogue.DoesNotExist:
        raise DialogueNotFound() from None


def send_context(
    *, user: Any, dialogue_id: int | None, client_id: str
) -> tuple[int | None, Dialogue | None, dict[str, Any]]:
    """What a send needs to know, in one query: (the id of the user's message already
    stored under `client_id`, the user's dialogue `dialogue_id` or None when none is
    given, the user's quota override). `DialogueNotFound` for a missing or foreign
    dialogue, unless the message was a resend (its id comes back then). The dialogue
    carries `send_leaf`: the last message of its shown branch, or None."""
    message = connection.ops.quote_name(Message._meta.db_table)
    quota = connection.ops.quote_name(UserQuota._meta.db_table)
    dup = f"(SELECT m.id FROM {message} m WHERE m.user_id = %s AND m.client_id = %s LIMIT 1)"  # noqa: S608
    if dialogue_id is None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {dup}, q.daily_tokens, q.daily_messages, q.daily_images "  # noqa: S608
                f"FROM (SELECT 1) AS one LEFT JOIN {quota} q ON q.user_id = %s",
                [user.pk, client_id, user.pk],
            )
            dup_id, tokens, messages, images = cursor.fetchone()
        return (
            dup_id,
            None,
            {
                "daily_tokens": tokens,
                "daily_messages": messages,
                "daily_images": images,
            },
        )
    _check_dialogue_id(dialogue_id)
    dialogue_table = connection.ops.quote_name(Dialogue._meta.db_table)
    leaf = (
        f"(SELECT l.id FROM {message} l WHERE l.dialogue_id = d.id "  # noqa: S608
        "AND NOT l.replaced ORDER BY l.id DESC LIMIT 1)"
    )
    rows = list(
        Dialogue.objects.raw(
            f"SELECT d.*, {dup} AS send_dup, q.daily_tokens AS send_quota_tokens, "  # noqa: S608
            f"q.daily_messages AS send_quota_messages, {leaf} AS send_leaf, "
            f"q.daily_images AS send_quota_images FROM {dialogue_table} d "
            f"LEFT JOIN {quota} q ON q.user_id = d.owner_id "
            "WHERE d.id = %s AND d.owner_id = %s",
            [user.pk, client_id, dialogue_id, user.pk],
        )
    )
    if not rows:
        resent = (
            Message.objects.filter(user=user, client_id=client_id)
            .values_list("id", flat=True)
            .first()
        )
        if resent is None:
            raise DialogueNotFound()
        return resent, None, {}
    dialogue = rows[0]
    override = {
        "daily_tokens": dialogue.send_quota_tokens,  # type: ignore[attr-defined]
        "daily_messages": dialogue.send_quota_messages,  # type: ignore[attr-defined]
        "daily_images": dialogue.send_quota_images,  # type: ignore[attr-defined]
    }
    return dialogue.send_dup, dialogue, override  # type: ignore[attr-defined]


def message_page(
    *, dialogue: Dialogue, before: int | None = None, limit: int | None = None
) -> tuple[list[Message], bool]:
    """The newest `limit` messages of the active branch before `before` (oldest
    first) and whether more exist; each carries `siblings` (message_siblings).

    Four queries whatever the dialogue's length or number of branches: the page (by
    the (dialogue, id) index over messages not replaced), its images, its
    attachments, its siblings.
    """
    limit = limit or settings.CHAT_PAGE_SIZE
    qs = Message.objects.filter(dialogue=dialogue, replaced=False)
    if before is not None:
        qs = qs.filter(id__lt=before)
    rows = list(
        qs.order_by("-id").prefetch_related(with_images(), with_attachments())[
            : limit + 1
        ]
    )
    has_more = len(rows) > limit
    page = rows[:limit][::-1]
    message_siblings(dialogue_id=dialogue.pk, messages=page)
    return page, has_more


def message_siblings(*, dialogue_id: int, messages: list[Message]) -> None:
    """Set `siblings` on each message: the ids of it and its siblings (the other
    children of its parent), oldest first. One query.

    A first turn's siblings are the replaced user messages without a parent (edits
    of the first message); messages stored before the tree existed and never
    migrated have no parent and no replaced flag, so they stand alone.
    """
    if not messages:
        return
    parents = {m.parent_id for m in messages if m.parent_id is not None}
    roots = any(m.parent_id is None and m.role == Message.Role.USER for m in messages)
    where = Q(parent_id__in=parents)
    if roots:
        where |= Q(parent__isnull=True, role=Message.Role.USER, replaced=True)
    children: dict[int | None, list[int]] = {}
    if parents or roots:
        rows = (
            Message.objects.filter(where, dialogue_id=dialogue_id)
            .order_by("id")
            .values_list("id", "parent_id")
        )
        for pk, parent in rows:
            children.setdefault(parent, []).append(pk)
    for m in messages:
        if m.parent_id is None and m.role != Message.Role.USER:
            m.siblings = [m.pk]  # type: ignore[attr-defined]
            continue
        ids = set(children.get(m.parent_id, [])) | {m.pk}
        m.siblings = sorted(ids)  # type: ignore[attr-defined]


def message_find_by_client_id(*, user: Any, client_id: str) -> Message | None:
    return (
        Message.objects.select_related("dialogue")
        .prefetch_related(with_images(), with_attachments())
        .filter(user=user, client_id=client_id)
        .first()
    )


def message_last_user(*, dialogue: Dialogue) -> Message | None:
    return (
        Message.objects.filter(
            dialogue=dialogue, role=Message.Role.USER, replaced=False
        )
        .order_by("-id")
        .first()
    )


# --- dialogue lists, search, presets, usage (context/dialogue API) ---------------------
# Owned by the context/dialogue API; the lead's functions stay above this line.

DIALOGUE_PAGE_SIZE = 30
SEARCH_MAX_CHARS = 200
_SNIPPET_BEFORE = 60
_SNIPPET_CHARS = 300
_SNIPPET_SHOWN = 160
_START = "\x02"
_MARKUP = [
    (re.compile(r"^\s*(```|~~~).*$", re.M), " "),  # code fences
    (re.compile(r"^\s{0,3}(#{1,6}|>+|[-*+]|\d+[.)])\s+", re.M), ""),  # block marks
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # links and images: their text
    (re.compile(r"\*\*|__|(?<!\w)[*_]|[*_](?!\w)|`+"), ""),  # emphasis, code marks
    (re.compile(r"\s*\|\s*"), " "),  # table cells
]


def snippet_text(window: str) -> str:
    """Plain text around a search match, as a reader would see it: Markdown markup
    removed, starting and ending on whole words, "…" where the message goes on."""
    whole_start = window.startswith(_START)
    text = window.removeprefix(_START)
    if not whole_start:
        # The window starts inside the message, maybe mid-word: drop that word.
        space = re.search(r"\s", text)
        if space and space.start() <= _SNIPPET_BEFORE // 2:
            text = text[space.end() :]
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    text = " ".join(text.split())
    if len(text) > _SNIPPET_SHOWN:
        cut = text.rfind(" ", 0, _SNIPPET_SHOWN)
        text = text[: cut if cut > _SNIPPET_SHOWN // 2 else _SNIPPET_SHOWN] + "…"
    return text if whole_start else "…" + text


def _cursor_encode(dialogue: Dialogue) -> str:
    stamp = int(dialogue.last_activity_at.timestamp() * 1_000_000)
    return f"{int(dialogue.pinned)}.{stamp}.{dialogue.pk}"


def _cursor_decode(cursor: str) -> tuple[bool, datetime, int]:
    try:
        pinned, stamp, pk = cursor.split(".")
        if pinned not in ("0", "1"):
            raise ValueError(pinned)
        moment = datetime.fromtimestamp(int(stamp) / 1_000_000, tz=UTC)
        return pinned == "1", moment, int(pk)
    except (ValueError, OverflowError, OSError):
        raise BadRequest(
            "The cursor is not valid.", fields={"cursor": "invalid"}
        ) from None


def dialogue_list_for_user(
    *,
    user: Any,
    cursor: str | None = None,
    q: str = "",
    limit: int = DIALOGUE_PAGE_SIZE,
) -> tuple[list[Dialogue], str | None]:
    """One page of the user's dialogues, pinned first, newest activity next, and the
    cursor of the next page (None at the end). Keyset pagination on (pinned,
    last_activity_at, id): stable while dialogues are added, one query per page.

    With `q`, only dialogues whose title or any message contains it (case-insensitive);
    each carries `snippet`: the text around the newest match in a message, or None.
    """
    qs = Dialogue.objects.filter(owner=user)
    if cursor:
        pinned, moment, pk = _cursor_decode(cursor)
        later = Q(pinned=pinned, last_activity_at__lt=moment) | Q(
            pinned=pinned, last_activity_at=moment, id__lt=pk
        )
        qs = qs.filter(later | Q(pinned=False) if pinned else later)
    q = " ".join((q or "").split())[:SEARCH_MAX_CHARS]
    if q:
        matches = Message.objects.filter(dialogue=OuterRef("pk"), content__icontains=q)
        # The window starts with _START when it starts with the message itself.
        marked = Concat(Value(_START), "content", output_field=TextField())
        start = Greatest(StrIndex(Lower(marked), Value(q.lower())) - _SNIPPET_BEFORE, 1)
        snippet = matches.order_by("-id").annotate(
            snip=Substr(marked, start, _SNIPPET_CHARS)
        )
        qs = qs.filter(Q(title__icontains=q) | Exists(matches)).annotate(
            snippet=Subquery(snippet.values("snip")[:1])
        )
    rows = list(qs.order_by("-pinned", "-last_activity_at", "-id")[: limit + 1])
    for row in rows:
        if q:
            row.snippet = snippet_text(row.snippet) if row.snippet else None  # type: ignore[attr-defined]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_cursor_encode(rows[-1]) if more else None)


def preset_list_for_user(*, user: Any) -> list[Preset]:
    return list(Preset.objects.filter(owner=user).order_by("name", "id"))


def preset_get_for_user(*, preset_id: Any, user: Any) -> Preset:
    """The user's preset; `PresetNotFound` for a missing one and a foreign one alike."""
    if not isinstance(preset_id, int) or isinstance(preset_id, bool) or preset_id <= 0:
        raise PresetNotFound()
    try:
        return Preset.objects.get(pk=preset_id, owner=user)
    except Preset.DoesNotExist:
        raise PresetNotFound() from None


def usage_for_user(*, user: Any, days: int = 14) -> list[dict[str, Any]]:
    """The user's daily totals of the last `days` UTC days (today included), oldest
    first; days without use are absent."""
    since = datetime.now(UTC).date() - timedelta(days=days - 1)
    return [
        dict(row)
        for row in UsageDaily.objects.filter(user=user, day__gte=since)
        .order_by("day")
        .values(
            "day",
            "messages",
            "prompt_tokens",
            "completion_tokens",
            "estimated_tokens",
            "images",
        )
    ]


# --- Share links (conversations/services/shares.py) -----------------------------------

_SHARE_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


def share_list_for_user(*, user: Any, dialogue: Dialogue | None = None) -> list[Share]:
    """The user's links, newest first, revoked ones included; of one dialogue if given."""
    qs = Share.objects.filter(owner=user)
    if dialogue is not None:
        qs = qs.filter(dialogue=dialogue)
    return list(qs.order_by("-created_at", "-id"))


def share_get_for_user(*, share_id: Any, user: Any) -> Share:
    """The user's link; `ShareNotFound` for a missing one and a foreign one alike."""
    if not isinstance(share_id, int) or isinstance(share_id, bool) or share_id <= 0:
        raise ShareNotFound()
    try:
        return Share.objects.get(pk=share_id, owner=user)
    except Share.DoesNotExist:
        raise ShareNotFound() from None


def share_get_public(*, token: str) -> Share:
    """The live link with this token, for anyone; revoked and unknown alike are
    `ShareNotFound`."""
    if not _SHARE_TOKEN.fullmatch(token or ""):
        raise ShareNotFound()
    try:
        return Share.objects.get(token=token, revoked_at__isnull=True)
    except Share.DoesNotExist:
        raise ShareNotFound() from None


def share_messages(*, share: Share) -> list[Message]:
    """The snapshot's messages in the order they were shared, images and
    attachments prefetched: three queries whatever its length."""
    order = {pk: i for i, pk in enumerate(share.message_ids)}
    rows = Message.objects.filter(
        dialogue_id=share.dialogue_id, pk__in=list(order)
    ).prefetch_related(with_images(), with_attachments())
    return sorted(rows, key=lambda m: order[m.pk])


def share_attachment(*, share: Share, attachment_id: int) -> Any:
    """A file attached to a message in the snapshot; `ShareNotFound` for any other."""
    from attachments.models import Attachment

    found = Attachment.objects.filter(
        pk=attachment_id,
        message_id__in=list(share.message_ids),
        message__dialogue_id=share.dialogue_id,
    ).first()
    if found is None:
        raise ShareNotFound()
    return found


def share_image(*, share: Share, image_id: int) -> Any:
    """An image of a message in the snapshot; `ShareNotFound` for any other."""
    from imaging.models import GeneratedImage

    image = (
        GeneratedImage.objects.filter(
            pk=image_id,
            message_id__in=list(share.message_ids),
            message__dialogue_id=share.dialogue_id,
        )
        .exclude(storage_key="")
        .first()
    )
    if image is None:
        raise ShareNotFound()
    return image
