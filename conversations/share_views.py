"""Share links: the public read-only page, its images, and the owner's JSON API.

The page is rendered on the server in one request (the snapshot, its images and
its attachments in four queries), with no script of ours, no socket and no login: it needs only the
static files. It is kept out of search engines and caches and sends no referrer, so
the token does not leak through a link a reader follows.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET

from attachments.views import attachment_response
from imaging.views import image_response

from .api_views import _body, api
from .exceptions import ShareNotFound
from .models import Message, Share
from .rendering import render_markdown
from .selectors import (
    dialogue_get_for_user,
    share_attachment,
    share_get_for_user,
    share_get_public,
    share_image,
    share_list_for_user,
    share_messages,
)
from .serializers import attachments_of, images_of
from .services.shares import share_create, share_dict, share_revoke


def _public_share(token: str) -> Share:
    try:
        return share_get_public(token=token)
    except ShareNotFound:
        raise Http404("No such link.") from None


def _private(response: HttpResponseBase) -> HttpResponseBase:
    response["X-Robots-Tag"] = "noindex, nofollow, noarchive"
    response["Referrer-Policy"] = "no-referrer"
    # A revoked link must stop working at once, also behind a shared cache.
    patch_cache_control(response, private=True, no_store=True)
    return response


def _item(share: Share, message: Message) -> dict[str, Any]:
    """What chat/_message.html needs, every image URL pointing through the link."""
    image_ids = {i.pk for i in images_of(message) if i.storage_key}

    def image_src(image_id: int) -> str | None:
        if image_id not in image_ids:
            return None
        return reverse("share-image", args=[share.token, image_id])

    assistant = message.role == Message.Role.ASSISTANT
    images = [
        {
            "url": image_src(i.pk),
            "prompt": i.prompt,
            "revised_prompt": i.revised_prompt,
            "width": i.width,
            "height": i.height,
        }
        for i in images_of(message)
    ]
    attachments = [
        {
            "url": reverse("share-file", args=[share.token, a.pk]),
            "name": a.name,
            "kind": a.kind,
            "size": a.size,
            "width": a.width,
            "height": a.height,
        }
        for a in attachments_of(message)
    ]
    return {
        "message": message,
        "assistant": assistant,
        "html": render_markdown(message.content, image_src=image_src)
        if assistant
        else None,
        "images": images,
        "attachments": attachments,
    }


@require_GET
def shared_dialogue(request: HttpRequest, token: str) -> HttpResponseBase:
    share = _public_share(token)
    items = [_item(share, m) for m in share_messages(share=share)]
    response = render(request, "share/dialogue.html", {"share": share, "items": items})
    return _private(response)


@require_GET
def shared_image(request: HttpRequest, token: str, image_id: int) -> HttpResponseBase:
    share = _public_share(token)
    try:
        image = share_image(share=share, image_id=image_id)
    except ShareNotFound:
        raise Http404("No such image.") from None
    return _private(image_response(request, image))


@require_GET
def shared_file(
    request: HttpRequest, token: str, attachment_id: int
) -> HttpResponseBase:
    share = _public_share(token)
    try:
        attachment = share_attachment(share=share, attachment_id=attachment_id)
    except ShareNotFound:
        raise Http404("No such file.") from None
    return _private(attachment_response(request, attachment))


# --- The owner's API -------------------------------------------------------------------


@api("GET", "POST")
def dialogue_shares(request: HttpRequest, dialogue_id: int) -> HttpResponse:
    """GET: the dialogue's links; POST {"message"?}: a new link up to that message."""
    dialogue = dialogue_get_for_user(dialogue_id=dialogue_id, user=request.user)
    if request.method == "POST":
        data = _body(request, {"message"})
        share = share_create(
            user=request.user, dialogue=dialogue, message_id=data.get("message")
        )
        return JsonResponse(share_dict(share), status=201)
    rows = share_list_for_user(user=request.user, dialogue=dialogue)
    return JsonResponse({"results": [share_dict(s) for s in rows]})


@api("GET")
def shares(request: HttpRequest) -> HttpResponse:
    """Every link of the user, newest first."""
    rows = share_list_for_user(user=request.user)
    return JsonResponse({"results": [share_dict(s) for s in rows]})


@api("GET", "DELETE")
def share_detail(request: HttpRequest, share_id: int) -> HttpResponse:
    """DELETE revokes the link (it answers 404 from then on); the record stays."""
    share = share_get_for_user(share_id=share_id, user=request.user)
    if request.method == "DELETE":
        share = share_revoke(share=share)
    return JsonResponse(share_dict(share))
