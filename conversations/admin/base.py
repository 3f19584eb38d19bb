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
# Past this many matching dialogues a word is matched in SQL instead of by id list.
SEARCH_ID_CAP = 5000


def dialogues_with_text(word: str) -> Q | Exists:
    matching = Message.objects.filter(content__icontains=word).order_by()
    ids = list(
        matching.values_list("dialogue_id", flat=True).distinct()[: SEARCH_ID_CAP + 1]
    )
    if len(ids) > SEARCH_ID_CAP:
        return Exists(matching.filter(dialogue=OuterRef("pk")))
    return Q(pk__in=ids)
