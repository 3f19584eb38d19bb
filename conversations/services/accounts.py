"""Accounts: the sign-up throttle per client address.

Failed log-ins are throttled by django-axes (settings: AXES_*): per account and per
address, each on its own, with a lock-out that staff lift in the admin ("Access
attempts") or with `manage.py axes_reset`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from ..exceptions import RateLimited

WINDOW_SECONDS = 3600


def signup_throttle(*, address: str, now: float) -> None:
    """Count one account created from `address`; RateLimited past
    SIGNUP_RATE_PER_HOUR in the current hour (0: no limit). The count lives in the
    cache, shared by every process when REDIS_URL is set."""
    limit = settings.SIGNUP_RATE_PER_HOUR
    if limit <= 0:
        return
    window = int(now // WINDOW_SECONDS)
    key = f"signup-throttle:{address}:{window}"
    cache.add(key, 0, timeout=WINDOW_SECONDS)
    if cache.incr(key) > limit:
        retry_after = (window + 1) * WINDOW_SECONDS - now
        raise RateLimited(
            "Too many accounts were created from your address. Please try again later.",
            retry_after=max(1, int(retry_after)),
        )
