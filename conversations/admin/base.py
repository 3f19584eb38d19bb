"""Helpers shared by the admin modules: the review permission, annotations, search."""

from __future__ import annotations

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

from ..models import Message

REVIEW_PERM = "conversations.review_dialogue"


def can_review(request: HttpRequest) -> bool:
    return request.user.has_perm(REVIEW_PERM)


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
