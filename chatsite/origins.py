"""The websocket handshake's `Origin` must be exactly one of the site's origins.

A browser sends the page's origin (scheme, host and port) with every websocket
handshake and the session cookie along with it, whatever page opened the socket.
Channels' `AllowedHostsOriginValidator` compares host names only, so a page served
from the same host on another port or scheme could open an authenticated socket
(cross-site websocket hijacking). This is the check Django's CSRF middleware makes
for unsafe requests, applied to the handshake: the origin must be the very URL the
socket was opened on (its `Host` an allowed host, its scheme the one it was served
with), or one of `CSRF_TRUSTED_ORIGINS` (exact, or `https://*.example.com`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_parts(origin: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin, ports made explicit; else None."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username:
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin1")
    return None


def _served_scheme(scope: dict[str, Any]) -> str:
    """http or https, as Django's `request.is_secure()` would say for this socket."""
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        header, secure_value = proxy
        name = header.removeprefix("HTTP_").replace("_", "-").lower().encode()
        value = _header(scope, name)
        if value is not None:
            return "https" if value.split(",")[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def _trusted(origin: tuple[str, str, int], pattern: str) -> bool:
    scheme, host, port = origin
    wildcard = "://*." in pattern
    wanted = _origin_parts(pattern.replace("://*.", "://", 1))
    if wanted is None or wanted[0] != scheme or wanted[2] != port:
        return False
    if wildcard:
        return host.endswith("." + wanted[1])
    return host == wanted[1]


def origin_allowed(scope: dict[str, Any]) -> bool:
    """Whether the handshake in `scope` comes from one of the site's own origins."""
    raw_origin = _header(scope, b"origin")
    origin = _origin_parts(raw_origin) if raw_origin else None
    if origin is None:
        return False
    if any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS):
        return True
    host = _header(scope, b"host")
    if not host:
        return False
    domain, port = split_domain_port(host.lower())
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = _served_scheme(scope)
    served = (scheme, domain.strip("[]"), int(port) if port else DEFAULT_PORTS[scheme])
    return origin == served


class SiteOriginValidator:
    """ASGI middleware: websocket handshakes from another origin are denied (403)."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
