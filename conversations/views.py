"""HTML pages: the chat page and sign-up. JSON endpoints live in `api_views`."""

import time
from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponsePermanentRedirect,
)
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_http_methods

from attachments.serializers import attachment_dict

from .exceptions import DialogueNotFound, RateLimited
from .forms import SignUpForm
from .models import Message
from .rendering import render_markdown
from .selectors import dialogue_get_for_user, message_page
from .serializers import attachments_of, image_dict, images_of
from .services.accounts import signup_throttle


class LoginView(auth_views.LoginView):
    """Django's log-in page (throttled by django-axes), linking to sign-up only
    when it is open."""

    redirect_authenticated_user = True

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {
            **super().get_context_data(**kwargs),
            "signup_enabled": settings.SIGNUP_ENABLED,
        }


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers (and the admin's pages) ask for /favicon.ico: the site's icon."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))


def _attach_limits() -> dict[str, int]:
    """The composer's upload limits (checked again on the server)."""
    return {
        "max_file": settings.ATTACHMENT_MAX_FILE_BYTES,
        "max_message": settings.ATTACHMENT_MAX_MESSAGE_BYTES,
        "max_count": settings.ATTACHMENT_MAX_PER_MESSAGE,
    }


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat")
    if not settings.SIGNUP_ENABLED:
        # Invite only: staff create accounts in the admin.
        status = 403 if request.method == "POST" else 200
        return render(request, "registration/signup_closed.html", status=status)
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            signup_throttle(
                address=request.META.get("REMOTE_ADDR", ""), now=time.time()
            )
        except RateLimited as exc:
            form.add_error(None, exc.message)
            return render(
                request, "registration/signup.html", {"form": form}, status=429
            )
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("chat")
    return render(request, "registration/signup.html", {"form": form})


@login_required
def chat(request: HttpRequest) -> HttpResponse:
    return render(request, "chat.html", {"attach_limits": _attach_limits()})


@login_required
def chat_dialogue(request: HttpRequest, dialogue_id: int) -> HttpResponse:
    """The chat page with one dialogue open, its newest page rendered on the server.

    The transcript is readable before the websocket connects (and without
    JavaScript); the page's script then replaces it with the live state. Someone
    else's dialogue is a 404 exactly like a missing one.
    """
    try:
        dialogue = dialogue_get_for_user(dialogue_id=dialogue_id, user=request.user)
    except DialogueNotFound:
        raise Http404 from None
    messages, has_more = message_page(dialogue=dialogue)
    context = {
        "dialogue": dialogue,
        "first_paint": [_first_paint(m) for m in messages if not m.replaced],
        "has_more": has_more,
        "attach_limits": _attach_limits(),
    }
    return render(request, "chat.html", context)


def _first_paint(message: Message) -> dict[str, Any]:
    """What the message template needs: user text stays plain, replies are Markdown."""
    assistant = message.role == Message.Role.ASSISTANT
    return {
        "message": message,
        "assistant": assistant,
        "html": render_markdown(message.content) if assistant else None,
        "images": [image_dict(i) for i in images_of(message)],
        "attachments": [attachment_dict(a) for a in attachments_of(message)],
    }
