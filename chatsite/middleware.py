"""Content Security Policy: no inline script or style, images from this site only.

`img-src 'self' data: blob:` keeps markdown images in model output from sending data to
another host. The admin keeps Django's own inline-free pages working under it.
"""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    ]
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        extra = getattr(settings, "CSP_IMG_SRC_EXTRA", "")
        self.policy = CSP.replace("img-src 'self'", f"img-src 'self' {extra}".rstrip())

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response
