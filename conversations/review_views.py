"""The user's side of review: reporting a reply from the chat page."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from .exceptions import BadRequest, ChatError, MessageNotFound, RateLimited
from .services.review import message_report
from .validation import INVALID_TEXT_MESSAGE, has_invalid_text


def _error(exc: ChatError, status: int) -> JsonResponse:
    return JsonResponse({"error": exc.as_dict()}, status=status)


@require_POST
def message_report_view(request: HttpRequest, message_id: int) -> JsonResponse:
    """POST /api/messages/<id>/report/ {reason} → 201 {id, message, dialogue}.

    Session auth and CSRF (the middleware); a message of someone else's dialogue is
    a 404 exactly like a missing one.
    """
    if not request.user.is_authenticated:
        return JsonResponse(
            {"error": {"code": "unauthorized", "message": "Sign in first."}}, status=401
        )
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _error(BadRequest("The body is not JSON."), 400)
    if not isinstance(body, dict):
        return _error(BadRequest("The body must be a JSON object."), 400)
    if has_invalid_text(body):
        return _error(BadRequest(INVALID_TEXT_MESSAGE), 400)
    try:
        flag = message_report(
            user=request.user, message_id=message_id, reason=body.get("reason")
        )
    except MessageNotFound as exc:
        return _error(exc, 404)
    except BadRequest as exc:
        return _error(exc, 400)
    except RateLimited as exc:
        return _error(exc, 429)
    return JsonResponse(
        {"id": flag.pk, "message": flag.message_id, "dialogue": flag.dialogue_id},
        status=201,
    )
