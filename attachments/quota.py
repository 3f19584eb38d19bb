"""The daily upload quota: bytes and files per user per UTC day (UploadDaily)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum

from .exceptions import AttachmentRefused
from .models import UploadDaily


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover


# --- The daily upload quota ----------------------------------------------------------


def upload_quota_reserve(*, user: Any, size: int, now: datetime) -> None:
    """Count `size` bytes against today's quota, or refuse if they would exceed it."""
    limit = settings.ATTACHMENT_DAILY_BYTES
    day = now.date()
    with transaction.atomic():
        try:
            with transaction.atomic():
                UploadDaily.objects.get_or_create(user=user, day=day)
        except IntegrityError:  # created concurrently
            pass
        rows = UploadDaily.objects.filter(user=user, day=day)
        if limit > 0:
            rows = rows.filter(bytes__lte=limit - size)
        if rows.update(bytes=F("bytes") + size, files=F("files") + 1) != 1:
            used = (
                UploadDaily.objects.filter(user=user, day=day)
                .values_list("bytes", flat=True)
                .first()
                or 0
            )
            raise AttachmentRefused(
                "quota_exceeded",
                f"This file ({human_size(size)}) would pass your daily upload "
                f"allowance of {human_size(limit)} ({human_size(used)} used today). "
                "It resets at midnight UTC.",
            )


def upload_quota_refund(*, user: Any, size: int, now: datetime) -> None:
    UploadDaily.objects.filter(user=user, day=now.date(), bytes__gte=size).update(
        bytes=F("bytes") - size, files=F("files") - 1
    )


def upload_used_today(*, user: Any, now: datetime) -> int:
    return (
        UploadDaily.objects.filter(user=user, day=now.date()).aggregate(
            total=Sum("bytes")
        )["total"]
        or 0
    )
