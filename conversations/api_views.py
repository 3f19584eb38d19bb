"""The JSON API under /api/ (COMMON.md): thin views over services and selectors.

Session auth (401 JSON for anonymous, never a login redirect), CSRF on unsafe methods
(403 JSON), strict bodies, and errors as {"error": {"code", "message", "fields"?}}.
Another user's id is a 404 exactly like a missing one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
)
from django.middleware.csrf import CsrfViewMiddleware
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.csrf import csrf_exempt

from .catalog import chat_models, default_model, provider_configured, resolve_model
from .exceptions import BadRequest, ChatError
from .selectors import (
    dialogue_get_for_user,
    dialogue_list_for_user,
    preset_get_for_user,
    preset_list_for_user,
)
from .serializers import dialogue_dict
from .services.context import context_report_for_dialogue
from .services.dialogues import dialogue_create, dialogue_delete, dialogue_update
from .services.exports import dialogue_export_json, dialogue_export_markdown_file
from .services.presets import (
    preset_apply,
    preset_create,
    preset_delete,
    preset_dict,
    preset_update,
)
from .services.usage import usage_summary
from .validation import INVALID_TEXT_MESSAGE, has_invalid_text

STATUS = {
    "bad_request": 400,
    "too_long": 400,
    "not_found": 404,
    "busy": 409,
    "rate_limited": 429,
    "quota_exceeded": 429,
    "unavailable": 503,
}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
API_PREFIX = "/api/"  # chatsite/urls.py
log = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]


def _error(code: str, message: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message, **extra}}, status=status
    )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """`CSRF_FAILURE_VIEW`: JSON for the API, Django's page everywhere else."""
    if request.path.startswith(API_PREFIX):
        return _error("forbidden", f"CSRF check failed: {reason}", 403)
    return django_csrf_failure(request, reason=reason)


def _csrf_failure(request: HttpRequest) -> HttpResponseBase | None:
    """Django's own CSRF check (its failure answered by `csrf_failure`)."""
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    # A stand-in view: the real one is csrf_exempt, which the check would honour.
    return check.process_view(request, lambda r: HttpResponse(), (), {})


def api(*methods: str) -> Callable[[View], View]:
    """Allowed methods, login, CSRF and the ChatError → JSON status mapping."""

    def decorate(view: View) -> View:
        @csrf_exempt  # checked below, after authentication, answering in JSON
        @wraps(view)
        def wrapper(
            request: HttpRequest, *args: Any, **kwargs: Any
        ) -> HttpResponseBase:
            if request.method not in methods:
                response = _error(
                    "method_not_allowed", f"{request.method} is not allowed here.", 405
                )
                response["Allow"] = ", ".join(methods)
                return response
            if not request.user.is_authenticated:
                return _error("unauthorized", "Sign in first.", 401)
            if request.method in UNSAFE:
                failure = _csrf_failure(request)
                if failure is not None:
                    return failure
            try:
                if any(has_invalid_text(v) for v in request.GET.lists()):
                    raise BadRequest(INVALID_TEXT_MESSAGE)
                return view(request, *args, **kwargs)
            except ChatError as exc:
                return JsonResponse(
                    {"error": exc.as_dict()}, status=STATUS.get(exc.code, 500)
                )
            except Exception:
                # Still JSON for the client; the traceback goes to the log (whose
                # handler drops repeats: chatsite/logging.py).
                log.exception("API view %s failed", view.__name__)
                return _error("internal", ChatError.default_message, 500)

        return wrapper

    return decorate


def _body(request: HttpRequest, allowed: set[str]) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except RequestDataTooBig:
        raise BadRequest("The request body is too large.") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    if has_invalid_text(data):
        raise BadRequest(INVALID_TEXT_MESSAGE)
    unknown = set(data) - allowed
    if unknown:
        raise BadRequest(
            "Unknown fields: " + ", ".join(sorted(unknown)),
            fields={name: "unknown" for name in sorted(unknown)},
        )
    return data


def _strings(data: dict[str, Any], *names: str) -> None:
    bad = {n: "invalid" for n in names if n in data and not isinstance(data[n], str)}
    if bad:
        raise BadRequest("These fields must be text.", fields=bad)


def _preset_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest("preset must be a preset id.", fields={"preset": "invalid"})
    return value


# --- Dialogues -----------------------------------------------------------------------


@api("GET", "POST")
def dialogues(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        data = _body(request, {"title", "model", "system_prompt", "preset"})
        _strings(data, "title", "model", "system_prompt")
        preset = None
        if data.get("preset") is not None:
            preset = preset_get_for_user(
                preset_id=_preset_id(data["preset"]), user=request.user
            )
        dialogue = dialogue_create(
            user=request.user,
            title=data.get("title") or "",
            model=data.get("model") or None,
            system_prompt=data.get("system_prompt") or "",
            preset=preset,
        )
        return JsonResponse(dialogue_dict(dialogue), status=201)
    q = request.GET.get("q", "")
    rows, next_cursor = dialogue_list_for_user(
        user=request.user, cursor=request.GET.get("cursor") or None, q=q
    )
    results = []
    for row in rows:
        item = dialogue_dict(row)
        if q.strip():
            item["snippet"] = getattr(row, "snippet", None)
        results.append(item)
    return JsonResponse({"results": results, "next_cursor": next_cursor})


@api("GET", "PATCH", "DELETE")
def dialogue_detail(request: HttpRequest, dialogue_id: int) -> HttpResponse:
    dialogue = dialogue_get_for_user(dialogue_id=dialogue_id, user=request.user)
    if request.method == "DELETE":
        dialogue_delete(dialogue=dialogue)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        data = _body(request, {"title", "pinned", "model", "system_prompt", "preset"})
        _strings(data, "title", "model", "system_prompt")
        if data.get("preset") is not None:
            preset = preset_get_for_user(
                preset_id=_preset_id(data.pop("preset")), user=request.user
            )
            dialogue = preset_apply(preset=preset, dialogue=dialogue)
        data.pop("preset", None)
        if data:
            dialogue = dialogue_update(dialogue=dialogue, **data)
    return JsonResponse(dialogue_dict(dialogue))


def _filename(dialogue: Any, ext: str) -> str:
    return f"dialogue-{dialogue.pk}.{ext}"


def _attachment(body: str, content_type: str, filename: str) -> HttpResponse:
    response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@api("GET")
def dialogue_export_md(request: HttpRequest, dialogue_id: int) -> HttpResponse:
    """Markdown, or a zip of the Markdown and its pictures (services.exports)."""
    dialogue = dialogue_get_for_user(dialogue_id=dialogue_id, user=request.user)
    export = dialogue_export_markdown_file(dialogue=dialogue)
    return FileResponse(
        export.body,
        as_attachment=True,
        filename=export.filename,
        content_type=export.content_type,
    )


@api("GET")
def dialogue_export_js(request: HttpRequest, dialogue_id: int) -> HttpResponse:
    dialogue = dialogue_get_for_user(dialogue_id=dialogue_id, user=request.user)
    return _attachment(
        dialogue_export_json(dialogue=dialogue),
        "application/json",
        _filename(dialogue, "json"),
    )


@api("GET")
def dialogue_context(request: HttpRequest, dialogue_id: int) -> HttpResponse:
    dialogue = dialogue_get_for_user(dialogue_id=dialogue_id, user=request.user)
    try:
        spec = resolve_model(dialogue.model or None)
    except BadRequest:  # a model since removed from CHAT_MODELS: gauge the default
        spec = default_model()
    return JsonResponse(context_report_for_dialogue(dialogue=dialogue, model=spec))


# --- Presets -------------------------------------------------------------------------


@api("GET", "POST")
def presets(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        data = _body(request, {"name", "system_prompt", "model"})
        _strings(data, "name", "system_prompt", "model")
        preset = preset_create(
            user=request.user,
            name=data.get("name", ""),
            system_prompt=data.get("system_prompt") or "",
            model=data.get("model") or "",
        )
        return JsonResponse(preset_dict(preset), status=201)
    return JsonResponse(
        {"results": [preset_dict(p) for p in preset_list_for_user(user=request.user)]}
    )


@api("GET", "PATCH", "DELETE")
def preset_detail(request: HttpRequest, preset_id: int) -> HttpResponse:
    preset = preset_get_for_user(preset_id=preset_id, user=request.user)
    if request.method == "DELETE":
        preset_delete(preset=preset)
        return HttpResponse(status=204)
    if request.method == "PATCH":
        data = _body(request, {"name", "system_prompt", "model"})
        _strings(data, "name", "system_prompt", "model")
        preset = preset_update(preset=preset, **data)
    return JsonResponse(preset_dict(preset))


# --- Models and usage ------------------------------------------------------------------


@api("GET")
def models(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "models": [
                {"name": m.name, "context_tokens": m.context_tokens, "vision": m.vision}
                for m in chat_models()
            ],
            "default": default_model().name,
            "demo": not provider_configured(),
        }
    )


@api("GET")
def usage(request: HttpRequest) -> HttpResponse:
    return JsonResponse(usage_summary(user=request.user))
