"""What the model sees: system prompt + rolling summary + the newest turns that fit.

The summary is a checkpoint stored with the dialogue (`summary`, `summary_upto_id`,
`summary_tokens`): it covers every eligible message up to `summary_upto_id`, and only
the messages after it are candidates for the window. When those no longer fit, the
overflow is summarised once, and the new checkpoint leaves a quarter of the room free,
so the next summary is due only after that much new text has arrived.

The database is read newest-first in growing chunks until the budget is filled: a
dialogue of 5,000 messages costs what one of 50 does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db.models import Q

from attachments.context import (
    TurnFiles,
    attachments_for_context,
    document_texts,
    has_attachments,
    merge_contents,
    picture_urls_for_model,
    turn_files,
)

from ..asyncdb import db_async
from ..catalog import ModelSpec
from ..counting import (
    EstimateCounter,
    TokenCounter,
    counter_message,
    counter_truncate,
)
from ..models import Dialogue, Message
from ..tokens import REPLY_PRIMING, TOKENS_PER_MESSAGE, count_message

log = logging.getLogger(__name__)

INCLUDED_STATUSES = (
    Message.Status.COMPLETE,
    Message.Status.STOPPED,
    Message.Status.INTERRUPTED,
)
SUMMARY_PREFIX = "Summary of the earlier conversation: "
SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of a conversation between a user and an "
    "assistant. Merge the earlier summary (if any) with the new turns into one concise "
    "summary. Keep facts, names, numbers, decisions, code identifiers, open questions "
    "and the user's stated preferences. Write at most {words} words, in the language "
    "of the conversation. Reply with the summary only."
)
# Share of the turns budget a new checkpoint leaves free for the dialogue to grow.
CHECKPOINT_HEADROOM = 0.25
FIRST_CHUNK = 64
MAX_CHUNK = 1024


class Completer(Protocol):
    async def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        max_tokens: int | None = None,
    ) -> str: ...


def _counter(llm: Any, model: str) -> TokenCounter:
    """The gateway's counter for `model` (the server's tokenizer where it has one;
    may block once to learn it, so call from a worker thread), else the estimate."""
    get = getattr(llm, "token_counter", None)
    return get(model) if get is not None else EstimateCounter(model)


@dataclass
class ContextResult:
    messages: list[dict[str, Any]]
    report: dict[str, Any]


@dataclass
class _Turn:
    id: int
    role: str
    content: str
    tokens: int  # framing included
    truncated: bool
    # Attachments: document blocks in `content`, pictures as parts (attachments/).
    files: TurnFiles | None = None

    def payload(self, urls: dict[int, str]) -> str | list[dict[str, Any]]:
        return self.files.content(urls) if self.files else self.content


@dataclass
class _Plan:
    budget: int
    model: str
    counter: TokenCounter
    system: list[dict[str, Any]]
    system_tokens: int
    summary: str
    summary_tokens: int  # the summary message, framing included
    summary_upto_id: int | None
    total: int
    # Newest first: the turns that fit beside the stored summary.
    window: list[_Turn]
    overflow: bool
    # When `overflow`: how many of `window` a new checkpoint keeps, and the older
    # turns (newest first) to fold into it.
    keep: int = 0
    to_summarise: list[_Turn] = field(default_factory=list)
    system_truncated: bool = False


def summary_reserve(budget: int) -> int:
    """Most tokens a summary may take: a sixth of the budget, 64 to 1024."""
    return max(64, min(1024, budget // 6))


def _summary_message(summary: str) -> dict[str, str]:
    return {"role": "system", "content": SUMMARY_PREFIX + summary}


def _turn(
    row: tuple[int, str, str],
    cap: int,
    model: str,
    counter: TokenCounter,
    attached: list[Any] | None = None,
    vision: bool = False,
) -> _Turn:
    pk, role, content = row
    overhead = counter.per_message
    # With attachments the text may take half the message's share, they the rest.
    text_cap = cap // 2 if attached else cap
    tokens = overhead + counter.count(content)
    truncated = False
    if tokens > text_cap:
        content, _ = counter_truncate(
            content, max(text_cap - overhead, 32), model=model, counter=counter
        )
        tokens = overhead + counter.count(content)
        truncated = True
    if not attached:
        return _Turn(pk, role, content, tokens, truncated)
    files = turn_files(
        text=content,
        attachments=attached,
        texts=document_texts(attachments=attached),
        cap=cap - overhead,
        count=counter.count,
        vision=vision,
    )
    return _Turn(
        pk,
        role,
        files.text,
        overhead + files.tokens,
        truncated or bool(files.notes),
        files,
    )


def _eligible(dialogue: Dialogue, upto_message_id: int | None) -> Any:
    qs = Message.objects.filter(
        dialogue_id=dialogue.pk, replaced=False, status__in=INCLUDED_STATUSES
    ).exclude(Q(content="") & ~has_attachments())
    if upto_message_id is not None:
        qs = qs.filter(id__lte=upto_message_id)
    return qs


def _newest_first(qs: Any, below: int | None) -> Any:
    """Rows (id, role, content, has attachments) newest first, below the id `below`,
    in growing chunks."""
    size = FIRST_CHUNK
    while True:
        page_qs = qs if below is None else qs.filter(id__lt=below)
        rows = list(
            page_qs.order_by("-id")
            .annotate(attached=has_attachments())
            .values_list("id", "role", "content", "attached")[:size]
        )
        yield from rows
        if len(rows) < size:
            return
        below = rows[-1][0]
        size = min(size * 2, MAX_CHUNK)


def _plan(
    dialogue: Dialogue,
    spec: ModelSpec,
    upto_message_id: int | None,
    llm: Any = None,
    budget: int | None = None,
) -> _Plan:
    model = spec.name
    budget = budget or spec.input_budget
    counter = _counter(llm, model)
    system: list[dict[str, Any]] = []
    system_tokens = 0
    system_truncated = False
    if dialogue.system_prompt.strip():
        prompt, dropped = counter_truncate(
            dialogue.system_prompt, budget // 2, model=model, counter=counter
        )
        system_truncated = bool(dropped)
        system = [{"role": "system", "content": prompt}]
        system_tokens = counter_message(system[0], counter)

    summary, upto = dialogue.summary, dialogue.summary_upto_id
    if (
        not summary
        or upto is None
        or (upto_message_id is not None and upto >= upto_message_id)
    ):
        summary, upto = "", None
    summary_tokens = (
        counter_message(_summary_message(summary), counter) if summary else 0
    )

    eligible = _eligible(dialogue, upto_message_id)
    candidates = eligible.filter(id__gt=upto) if upto is not None else eligible

    base = budget - REPLY_PRIMING - system_tokens
    room = base - summary_tokens
    # One message may take at most half of the room; larger ones are cut in the middle.
    cap = max(room // 2, 64)
    # A new checkpoint keeps the newest turns within 3/4 of what remains beside a
    # full-size summary.
    keep_room = int(
        (base - summary_reserve(budget) - TOKENS_PER_MESSAGE * 2)
        * (1 - CHECKPOINT_HEADROOM)
    )
    # The summariser's input: the old summary and as many overflowing turns as fit.
    summarise_room = max(budget - 200 - summary_tokens, budget // 4)

    window: list[_Turn] = []
    used = keep = 0
    overflow = False
    to_summarise: list[_Turn] = []
    summarise_used = 0
    seen = 0
    exhausted = True
    for row in _newest_first(candidates, None):
        seen += 1
        files = (
            attachments_for_context(message_ids=[row[0]]).get(row[0])
            if row[3]
            else None
        )
        turn = _turn(row[:3], cap, model, counter, files, spec.vision)
        if not overflow:
            if used + turn.tokens <= room or not window:
                window.append(turn)
                used += turn.tokens
                if used <= keep_room or keep == 0:
                    keep = len(window)
                continue
            overflow = True
            # What a new checkpoint drops from the window is summarised first.
            pending = [*window[keep:], turn]
        else:
            pending = [turn]
        fits = True
        for item in pending:
            if summarise_used + item.tokens > summarise_room:
                fits = False
                break
            to_summarise.append(item)
            summarise_used += item.tokens
        if not fits:
            exhausted = False
            break
    # Every eligible message was read already unless a summary or the budget cut the
    # walk short: only then is counting them another query.
    total = seen if exhausted and upto is None else eligible.count()
    return _Plan(
        budget=budget,
        model=model,
        counter=counter,
        system=system,
        system_tokens=system_tokens,
        summary=summary,
        summary_tokens=summary_tokens,
        summary_upto_id=upto,
        total=total,
        window=window,
        overflow=overflow,
        keep=keep,
        to_summarise=to_summarise,
        system_truncated=system_truncated,
    )


def _alternating(
    turns: list[_Turn], urls: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """Oldest first, shaped for the strictest chat templates (Gemma, Mistral, Llama 2
    raise on anything else): starting with `user`, strictly alternating.

    A reply that failed, was stopped before any text or came back empty is not in
    `turns`, which leaves two `user` turns in a row: they are merged into one rather
    than separated by a stand-in assistant turn, because the model then sees only
    what was really said (small models copy a stand-in such as "(no reply)" into
    later answers) and answers both, which is what a user who asked again wants."""
    shaped: list[dict[str, Any]] = []
    for turn in turns:
        if not shaped and turn.role != Message.Role.USER:
            continue  # the window may open on a reply whose question fell out
        content = turn.payload(urls or {})
        if shaped and shaped[-1]["role"] == turn.role:
            shaped[-1]["content"] = merge_contents(shaped[-1]["content"], content)
        else:
            shaped.append({"role": turn.role, "content": content})
    return shaped


def _system_message(plan: _Plan, summary: str) -> list[dict[str, Any]]:
    """At most one system message: the prompt and the summary merged."""
    parts = [m["content"] for m in plan.system]
    if summary:
        parts.append(SUMMARY_PREFIX + summary)
    return [{"role": "system", "content": "\n\n".join(parts)}] if parts else []


def _result(
    plan: _Plan,
    turns: list[_Turn],
    summary: str,
    *,
    summary_failed: bool = False,
    summary_refreshed: bool = False,
    urls: dict[int, str] | None = None,
) -> ContextResult:
    messages = _system_message(plan, summary)
    summary_tokens = 0
    if summary:
        summary_tokens = counter_message(_summary_message(summary), plan.counter)
    messages.extend(_alternating(list(reversed(turns)), urls))
    used = (
        plan.system_tokens
        + summary_tokens
        + sum(t.tokens for t in turns)
        + REPLY_PRIMING
    )
    report = {
        "budget_tokens": plan.budget,
        "used_tokens": used,
        "system_tokens": plan.system_tokens,
        "summary_used": bool(summary),
        "summary_tokens": summary_tokens,
        "included_messages": len(turns),
        "total_messages": plan.total,
        "omitted_messages": max(plan.total - len(turns), 0),
        "truncated": plan.system_truncated or any(t.truncated for t in turns),
        "truncated_messages": sum(1 for t in turns if t.truncated),
        "summary_failed": summary_failed,
        "summary_refreshed": summary_refreshed,
        # "server": counted with the model's own tokenizer; "estimate": tiktoken
        # scaled by a factor the server's reported usage corrects.
        "tokenizer": "server" if plan.counter.exact else "estimate",
        "truncated_attachments": [n for t in turns if t.files for n in t.files.notes],
    }
    return ContextResult(messages=messages, report=report)


def _transcript(turns: list[_Turn]) -> str:
    """Oldest first, for the summariser."""
    return "\n\n".join(
        f"{'User' if t.role == Message.Role.USER else 'Assistant'}: {t.content}"
        for t in reversed(turns)
    )


def _summary_request(plan: _Plan) -> tuple[list[dict[str, str]], int]:
    reserve = summary_reserve(plan.budget)
    words = max(30, int(reserve * 0.6))
    parts = []
    if plan.summary:
        parts.append(f"Earlier summary:\n{plan.summary}")
    parts.append(f"New turns:\n{_transcript(plan.to_summarise)}")
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS.format(words=words)},
        {"role": "user", "content": "\n\n".join(parts)},
    ], reserve


def _save_checkpoint(
    dialogue: Dialogue, summary: str, upto_id: int, model: str
) -> None:
    tokens = count_message(_summary_message(summary), model=model)
    # Never move a checkpoint backwards (a concurrent build may have gone further).
    Dialogue.objects.filter(pk=dialogue.pk).filter(
        Q(summary_upto_id__isnull=True) | Q(summary_upto_id__lt=upto_id)
    ).update(summary=summary, summary_upto_id=upto_id, summary_tokens=tokens)
    dialogue.summary, dialogue.summary_upto_id, dialogue.summary_tokens = (
        summary,
        upto_id,
        tokens,
    )


async def context_build(
    *,
    dialogue: Dialogue,
    model: ModelSpec,
    llm: Completer,
    upto_message_id: int | None = None,
    budget: int | None = None,
    continue_text: str | None = None,
) -> ContextResult:
    """The messages for the next reply and a report of what they hold.

    `upto_message_id`: the newest message to include (the user message being
    answered); later ones and the reply in progress (status streaming) are left out.
    Asks the model for a summary only when the window overflows past the checkpoint;
    if that fails, the oldest turns are dropped and the report says so.
    `budget`: fewer input tokens than the model's (a retry after the server refused
    the prompt as too long). `continue_text`: the reply being continued: it follows
    as the assistant's turn (its end, when long), then a user turn asking the model
    to go on, so the shape stays what strict chat templates accept.
    """
    if continue_text is None:
        return await _build(dialogue, model, llm, upto_message_id, budget)
    counter = await db_async(_counter)(llm, model.name)
    total = budget or model.input_budget
    tail = _tail(continue_text, total // 3, model.name, counter)
    extra = [
        {"role": "assistant", "content": tail},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    extra_tokens = sum(counter_message(m, counter) for m in extra)
    result = await _build(
        dialogue, model, llm, upto_message_id, max(total - extra_tokens, 128)
    )
    result.messages.extend(extra)
    result.report["used_tokens"] += extra_tokens
    return result


CONTINUE_INSTRUCTION = (
    "Continue your previous answer exactly where it stopped, mid-sentence if need "
    "be. Do not repeat what you already wrote and do not mention the interruption."
)


def _tail(text: str, max_tokens: int, model: str, counter: TokenCounter) -> str:
    """The end of `text` within `max_tokens` (the model continues from its end)."""
    if counter.count(text) <= max_tokens:
        return text
    keep = max(len(text) * max_tokens // max(counter.count(text), 1), 1)
    while keep > 1 and counter.count(text[-keep:]) > max_tokens:
        keep = keep * 3 // 4
    return "…" + text[-keep:]


async def _build(
    dialogue: Dialogue,
    model: ModelSpec,
    llm: Completer,
    upto_message_id: int | None,
    budget: int | None,
) -> ContextResult:
    plan = await db_async(_plan)(dialogue, model, upto_message_id, llm, budget)
    urls = await _picture_urls(plan.window)
    if not plan.overflow:
        return _result(plan, plan.window, plan.summary, urls=urls)
    if not plan.to_summarise:
        return _result(plan, plan.window, plan.summary, urls=urls)
    kept = plan.window[: plan.keep]
    request, reserve = _summary_request(plan)
    try:
        summary = (
            await llm.complete(model=model.name, messages=request, max_tokens=reserve)
        ).strip()
        if not summary:
            raise ValueError("empty summary")
    except (
        Exception
    ):  # any failure: degrade to dropping old turns, never fail the reply
        log.warning(
            "summary of dialogue %s failed; dropping old turns",
            dialogue.pk,
            exc_info=True,
        )
        return _result(plan, plan.window, plan.summary, summary_failed=True, urls=urls)
    summary, _ = counter_truncate(
        summary, reserve, model=model.name, counter=plan.counter
    )
    await db_async(_save_checkpoint)(
        dialogue, summary, plan.to_summarise[0].id, model.name
    )
    return _result(plan, kept, summary, summary_refreshed=True, urls=urls)


async def _picture_urls(turns: list[_Turn]) -> dict[int, str]:
    """Data or presigned URLs of the pictures in `turns`: storage reads, kept off the
    database threads."""
    pictures = [p for t in turns if t.files for p in t.files.pictures]
    if not pictures:
        return {}
    return await sync_to_async(picture_urls_for_model, thread_sensitive=False)(pictures)


def context_report_for_dialogue(
    *, dialogue: Dialogue, model: ModelSpec
) -> dict[str, Any]:
    """The context gauge for the next reply, from the stored summary (no model call)."""
    plan = _plan(dialogue, model, None)
    return _result(plan, plan.window, plan.summary).report
