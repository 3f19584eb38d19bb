"""The one door to image files: only the dialogue's owner gets through, or staff with
the review permission, whose every look is audited like a transcript view."""

from __future__ import annotations

import hashlib

from django.contrib.auth.decorators import login_required
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponseNotModified,
    HttpResponseRedirect,
)
from django.http.response import HttpResponseBase
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET
from storages.backends.s3 import S3Storage

from conversations.services.review import transcript_view_record

from .exceptions import ImageNotFound
from .generators import EXTENSIONS
from .models import GeneratedImage
from .selectors import image_get_for_user

# Served inline only as these; anything else would be sniffable HTML/SVG.
SAFE_TYPES = frozenset(EXTENSIONS)


@login_required
@require_GET
def image_file(request: HttpRequest, pk: int) -> HttpResponseBase:
    try:
        image = image_get_for_user(image_id=pk, user=request.user)
    except ImageNotFound:
        raise Http404("No such image.") from None
    dialogue = image.message.dialogue
    if image.storage_key and dialogue.owner_id != request.user.pk:
        transcript_view_record(
            viewer=request.user, dialogue=dialogue, via=f"image {image.pk}"
        )
    return image_response(request, image)


def image_response(request: HttpRequest, image: GeneratedImage) -> HttpResponseBase:
    """The bytes (or a signed link) of an image the caller has allowed the viewer to
    see: the owner's view above, or a share link's."""
    if not image.storage_key:
        raise Http404("No such image.")
    content_type = image.content_type if image.content_type in SAFE_TYPES else ""
    download = request.GET.get("download") == "1"
    ext = EXTENSIONS.get(content_type, "bin")
    filename = f"image-{image.pk}.{ext}"
    disposition = "attachment" if download or not content_type else "inline"

    if not isinstance(default_storage, FileSystemStorage):
        # Object store: a short-lived signed link, so the bytes don't pass through us.
        params = {"ResponseContentDisposition": f'{disposition}; filename="{filename}"'}
        if content_type:
            params["ResponseContentType"] = content_type
        if isinstance(default_storage, S3Storage):
            url = default_storage.url(image.storage_key, parameters=params)
        else:  # another remote storage: its own (ideally expiring) URL
            url = default_storage.url(image.storage_key)
        response: HttpResponseBase = HttpResponseRedirect(url)
        patch_cache_control(response, private=True, no_store=True)
        return response

    # The URL stays the same when an image is re-rendered; the key changes.
    etag = '"' + hashlib.sha256(image.storage_key.encode()).hexdigest()[:32] + '"'
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponseNotModified()
    else:
        try:
            handle = default_storage.open(image.storage_key, "rb")
        except FileNotFoundError:
            raise Http404("No such image.") from None
        response = FileResponse(
            handle,
            content_type=content_type or "application/octet-stream",
            as_attachment=disposition == "attachment",
            filename=filename,
        )
    response["ETag"] = etag
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    # Revalidate each time (a cheap 304): a re-render keeps the URL, so a cached
    # copy would hide the new picture.
    patch_cache_control(response, private=True, no_cache=True)
    return response
