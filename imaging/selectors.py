"""Reads of generated images. Anything a user reaches is scoped to that user."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from .exceptions import ImageNotFound
from .models import GeneratedImage

# A pending image untouched this long was abandoned (its process died); younger
# ones are being rendered right now and are left alone by re-render selections.
STALE_PENDING = timedelta(minutes=15)


# The transcript rule: who may read someone else's dialogue may see its pictures.
REVIEW_PERM = "conversations.review_dialogue"


def image_get_for_user(*, image_id: int, user: Any) -> GeneratedImage:
    """The image if `user` owns its dialogue, or is staff with the review permission
    (such views are audited by the caller, as transcript views are); else
    ImageNotFound. A missing image and another user's image are indistinguishable.
    """
    qs = GeneratedImage.objects.select_related("message__dialogue")
    if not (user.is_active and user.is_staff and user.has_perm(REVIEW_PERM)):
        qs = qs.filter(message__dialogue__owner=user)
    try:
        return qs.get(pk=image_id)
    except GeneratedImage.DoesNotExist:
        raise ImageNotFound() from None


def user_find(*, username_or_id: str) -> Any | None:
    """A user by username, or by numeric id when no username matches."""
    users = get_user_model()._default_manager
    found = users.filter(username=username_or_id).first()
    if found is None and username_or_id.isdigit():
        found = users.filter(pk=int(username_or_id)).first()
    return found


def image_ids_for_rerender(
    *,
    ids: Iterable[int] | None = None,
    dialogue_id: int | None = None,
    user: Any | None = None,
    failed_only: bool = False,
    since: datetime | None = None,
) -> list[int]:
    """Ids of the images a re-render run should process; filters combine (AND).

    Images still being rendered (pending, recently touched) are never selected.
    """
    qs = GeneratedImage.objects.exclude(
        status=GeneratedImage.Status.PENDING,
        updated_at__gt=timezone.now() - STALE_PENDING,
    )
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    if dialogue_id is not None:
        qs = qs.filter(message__dialogue_id=dialogue_id)
    if user is not None:
        qs = qs.filter(message__dialogue__owner=user)
    if failed_only:
        qs = qs.filter(status=GeneratedImage.Status.FAILED)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    return list(qs.order_by("pk").values_list("pk", flat=True))


def images_by_ids(*, ids: Iterable[int]) -> list[GeneratedImage]:
    return list(
        GeneratedImage.objects.filter(pk__in=list(ids))
        .select_related("message__dialogue")
        .order_by("pk")
    )


def image_keys_for_dialogue(*, dialogue: Any) -> list[str]:
    return list(
        GeneratedImage.objects.filter(message__dialogue=dialogue)
        .exclude(storage_key="")
        .values_list("storage_key", flat=True)
    )


def image_keys_for(*, images: Iterable[GeneratedImage]) -> list[str]:
    pks = [image.pk for image in images]
    return list(
        GeneratedImage.objects.filter(pk__in=pks)
        .exclude(storage_key="")
        .values_list("storage_key", flat=True)
    )
