"""Staff review: flags (from staff or from a user's report) and the transcript audit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef

from ..exceptions import BadRequest, MessageNotFound
from ..models import Dialogue, Flag, Message, TranscriptView
from .usage import report_rate_hit

REASON_MAX_CHARS = 2000


def _clean_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise BadRequest(
            "Say briefly what is wrong with this reply.", fields={"reason": "required"}
        )
    reason = reason.strip()
    if len(reason) > REASON_MAX_CHARS:
        raise BadRequest(
            f"The reason is longer than {REASON_MAX_CHARS} characters.",
            fields={"reason": "too_long"},
        )
    return reason


@transaction.atomic
def flag_create(
    *,
    dialogue: Dialogue,
    created_by: Any,
    source: str,
    reason: str,
    message: Message | None = None,
    reviewer_notes: str = "",
) -> Flag:
    """Record a flag and mark the dialogue (and the message) as flagged."""
    if message is not None and message.dialogue_id != dialogue.pk:
        raise BadRequest("The message does not belong to this dialogue.")
    flag = Flag.objects.create(
        dialogue=dialogue,
        message=message,
        created_by=created_by,
        source=source,
        reason=reason,
        reviewer_notes=reviewer_notes,
    )
    Dialogue.objects.filter(pk=dialogue.pk, flagged=False).update(flagged=True)
    dialogue.flagged = True
    if message is not None:
        Message.objects.filter(pk=message.pk, flagged=False).update(flagged=True)
        message.flagged = True
    return flag


@transaction.atomic
def dialogues_flag(
    *, dialogues: Iterable[Dialogue], created_by: Any, reason: str
) -> int:
    """Staff flag several dialogues at once; returns how many flags were created."""
    reason = _clean_reason(reason)
    flags = [
        Flag(dialogue=d, created_by=created_by, source=Flag.Source.STAFF, reason=reason)
        for d in dialogues
    ]
    Flag.objects.bulk_create(flags)
    Dialogue.objects.filter(pk__in=[f.dialogue_id for f in flags]).update(flagged=True)
    return len(flags)


@transaction.atomic
def flags_resolve(*, flags: Iterable[Flag], resolved_by: Any) -> int:
    """Close flags; a dialogue or message with no open flag left is unflagged."""
    ids = [f.pk for f in flags]
    rows = list(
        Flag.objects.filter(pk__in=ids, resolved=False).values_list(
            "pk", "dialogue_id", "message_id"
        )
    )
    Flag.objects.filter(pk__in=[r[0] for r in rows]).update(
        resolved=True, resolved_by=resolved_by
    )
    open_flags = Flag.objects.filter(resolved=False)
    Dialogue.objects.filter(pk__in={r[1] for r in rows}).exclude(
        Exists(open_flags.filter(dialogue=OuterRef("pk")))
    ).update(flagged=False)
    Message.objects.filter(pk__in={r[2] for r in rows if r[2]}).exclude(
        Exists(open_flags.filter(message=OuterRef("pk")))
    ).update(flagged=False)
    return len(rows)


def message_report(*, user: Any, message_id: int, reason: object) -> Flag:
    """A user reports a message of one of their own dialogues for staff review.

    Someone else's message behaves exactly like a missing one. Reporting the same
    message again while the first report is open returns that report. At most
    CHAT_REPORTS_PER_HOUR reports per user in any hour (`RateLimited`).
    """
    reason = _clean_reason(reason)
    report_rate_hit(user=user)
    message = (
        Message.objects.select_related("dialogue")
        .filter(pk=message_id, dialogue__owner=user)
        .first()
    )
    if message is None:
        raise MessageNotFound()
    existing = Flag.objects.filter(
        message=message, created_by=user, source=Flag.Source.USER, resolved=False
    ).first()
    if existing is not None:
        return existing
    return flag_create(
        dialogue=message.dialogue,
        message=message,
        created_by=user,
        source=Flag.Source.USER,
        reason=reason,
    )


def _dialogue_repr(dialogue: Dialogue, via: str = "") -> str:
    suffix = f" [{via}]" if via else ""
    return f"#{dialogue.pk} {str(dialogue)[:200]}{suffix}"[:250]


def transcript_view_record(
    *, viewer: Any, dialogue: Dialogue, via: str = ""
) -> TranscriptView:
    """Audit one staff view of a transcript (who, what, when); `via` ("image 12")
    names what was seen when it was not the transcript page itself."""
    return TranscriptView.objects.create(
        viewer=viewer, dialogue=dialogue, dialogue_repr=_dialogue_repr(dialogue, via)
    )


def transcript_views_record(
    *, viewer: Any, dialogues: Iterable[Dialogue], via: str = ""
) -> int:
    """Audit a bulk access to transcripts, such as an export: one row per dialogue.

    `via` ("export json") is kept in the row's description, so the trail tells a
    download from a look.
    """
    rows = [
        TranscriptView(viewer=viewer, dialogue=d, dialogue_repr=_dialogue_repr(d, via))
        for d in dialogues
    ]
    TranscriptView.objects.bulk_create(rows)
    return len(rows)
