"""Helpers shared by the admin modules: the review permission, annotations, search."""

from __future__ import annotations

from django import forms
from django.db.models import (
    Aggregate,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from ..models import Message

REVIEW_PERM = "conversations.review_dialogue"


class MathMedia:
    """A transcript's math, drawn in the browser as on the chat page: the server
    leaves TeX placeholders (conversations/rendering.py) for static/js/math.js."""

    css = {"all": ["vendor/katex/katex.min.css"]}
    js = ["vendor/katex/katex.min.js", forms.Script("js/math-page.js", type="module")]


def can_review(request: HttpRequest) -> bool:
    return request.user.has_perm(REVIEW_PERM)


def flag_mark(flagged: bool, *, open_flags: int | None = None) -> str:
    """A review state for a list column: a red "⚑ flagged" or a quiet dash."""
    if not flagged and not open_flags:
        return format_html('<span class="review-clear">{}</span>', "–")
    label = "⚑ flagged" if flagged else "⚑"
    if open_flags:
        label += f" · {open_flags} open"
    return format_html('<span class="review-flagged">{}</span>', label)


def image_url(image_id: int) -> str:
    return reverse("image-file", args=[image_id])


def subquery_int(queryset: QuerySet, group_by: str, aggregate: Aggregate) -> Coalesce:
    """A correlated aggregate over `queryset` (filtered on OuterRef("pk")), 0 if empty."""
    grouped = queryset.order_by().values(group_by).annotate(v=aggregate).values("v")
    return Coalesce(Subquery(grouped, output_field=IntegerField()), 0)


MAX_SEARCH_WORDS = 5
# Matching messages read as ids before a word counts as common and is matched in SQL.
SEARCH_ROW_CAP = 10_000


def dialogues_with_text(word: str) -> Q | Exists:
    """Dialogues with a message containing `word`, for the changelist search.

    Message text has no trigram index, so a rare word costs a sequential scan: it is
    done once here and the ids reused by both the page and its count. A common word
    stops this scan early (LIMIT) and falls back to a correlated EXISTS.
    """
    matching = Message.objects.filter(content__icontains=word).order_by()
    ids = list(matching.values_list("dialogue_id", flat=True)[: SEARCH_ROW_CAP + 1])
    if len(ids) > SEARCH_ROW_CAP:
        return Exists(matching.filter(dialogue=OuterRef("pk")))
    return Q(pk__in=sorted(set(ids)))
