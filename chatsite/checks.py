"""Project system checks (registered by chatsite.apps)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from chatsite.secretkey import is_public


@register(Tags.security, deploy=True)
def check_secret_key(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if not is_public(settings.SECRET_KEY):
        return []
    return [
        Error(
            "DJANGO_SECRET_KEY is not set or is a placeholder published with the code: "
            "anyone could forge sessions and password-reset links.",
            hint="Set DJANGO_SECRET_KEY to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))').",
            id="chatsite.E001",
        )
    ]
