"""Upload (PUT or POST /attachments/) and the one door to attachment files.

The upload is multipart with Django's CSRF check, streamed through temporary files.
The page uses PUT: under daphne, Twisted itself parses every multipart POST body in
memory with the `email` package before Django sees it (about ten times the body's
size at its peak: bench/results/upload_throughput.md); it leaves other methods
alone, and Django's MultiPartParser then streams the body through the handlers.
The file view lets the owner through, and staff holding the review permission
(audited like a transcript view); to anyone else, anonymous visitors included, an
attachment is as missing as one that never existed (404).
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.files.storage import FileSystemStorage, default_storage
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotModified,
    HttpResponseRedirect,
    JsonResponse,
)
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.http.response import HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.cache import patch_cache_control
from django.views.decorators.csrf import csrf_exempt
from storages.backends.s3 import S3Storage

from conversations.services.review import transcript_views_record

from .exceptions import AttachmentNotFound, AttachmentRefused
from .selectors import attachment_get_for_viewer
from .serializers import attachment_dict
from .services import attachment_discard, attachment_upload
from .uploads import LimitedTemporaryFileUploadHandler

STATUS = {
    "empty": 400,
    "bad_request": 400,
    "too_large": 413,
    "unsupported_type": 415,
    "type_mismatch": 415,
    "quota_exceeded": 429,
    "storage_error": 503,
    "not_found": 404,
}
# Multipart framing around one file: boundaries, headers, the field name.
MULTIPART_OVERHEAD = 64 * 1024
# Served inline as what they are; documents as plain text, PDFs only as downloads.
INLINE_PICTURES = frozenset({"image/png", "image/jpeg"})


def _error(code: str, message: str) -> JsonResponse:
    return JsonResponse(
        {"error": {"code": code, "message": message}}, status=STATUS.get(code, 400)
    )


def _csrf_rejected(request: HttpRequest) -> bool:
    """Django's own CSRF check (the middleware's public hooks), run by hand so the
    upload handlers are in place before it reads the body."""
    check = CsrfViewMiddleware(lambda r: HttpResponse())
    check.process_request(request)
    return check.process_view(request, _protected, (), {}) is not None


def _protected(request: HttpRequest) -> HttpResponse:  # the view the check guards
    return HttpResponse()


@csrf_exempt  # checked in the view, once the upload handlers are set
def attachment_collection(request: HttpRequest) -> HttpResponseBase:
    if request.method not in ("PUT", "POST"):
        response = _error("bad_request", f"{request.method} is not allowed here.")
        response.status_code = 405
        response["Allow"] = "PUT, POST"
        return response
    if not request.user.is_authenticated:
        return JsonResponse(
            {"error": {"code": "unauthorized", "message": "Sign in first."}}, status=401
        )
    limit = settings.ATTACHMENT_MAX_FILE_BYTES
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > limit + MULTIPART_OVERHEAD:
        return _too_large(declared)
    handler = LimitedTemporaryFileUploadHandler(request, limit=limit)
    request.upload_handlers = [handler]
    if _csrf_rejected(request):
        return JsonResponse(
            {
                "error": {
                    "code": "forbidden",
                    "message": "CSRF check failed. Reload the page.",
                }
            },
            status=403,
        )
    try:
        fields, files = _parse(request)  # the body, if the check did not read it
    except MultiPartParserError:
        return _error("bad_request", "The upload is not valid multipart/form-data.")
    upload = files.get("file")
    if handler.exceeded:
        return _too_large(handler.received)
    if upload is None:
        return _error("bad_request", "Send the file in the multipart field `file`.")
    try:
        attachment = attachment_upload(
            user=request.user,
            file=upload.file,
            name=fields.get("name") or upload.name or "",
            size=upload.size,
        )
    except (AttachmentRefused, AttachmentNotFound) as exc:
        return _error(exc.code, exc.message)
    finally:
        upload.close()  # the temporary file goes now
    return JsonResponse({"attachment": attachment_dict(attachment)}, status=201)


def _parse(request: HttpRequest) -> tuple[Any, Any]:
    """(form fields, files) of a multipart POST or PUT, through the upload handlers."""
    if request.method == "POST":
        return request.POST, request.FILES
    if not request.content_type.startswith("multipart/form-data"):
        raise MultiPartParserError("not multipart")
    return MultiPartParser(
        request.META, request, request.upload_handlers, request.encoding
    ).parse()


def _too_large(size: int) -> JsonResponse:
    from .quota import human_size

    limit = settings.ATTACHMENT_MAX_FILE_BYTES
    return _error(
        "too_large",
        f"The file is larger than {human_size(limit)}, the most accepted"
        + (f" (about {human_size(size)} was sent)." if size else "."),
    )


@csrf_exempt
def attachment_item(request: HttpRequest, pk: int) -> HttpResponseBase:
    if request.method == "DELETE":
        return _discard(request, pk)
    if request.method not in ("GET", "HEAD"):
        raise Http404("No such attachment.")
    return _file(request, pk)


def _discard(request: HttpRequest, pk: int) -> HttpResponseBase:
    if not request.user.is_authenticated or _csrf_rejected(request):
        raise Http404("No such attachment.")
    try:
        attachment_discard(user=request.user, attachment_id=pk)
    except AttachmentNotFound:
        raise Http404("No such attachment.") from None
    return HttpResponse(status=204)


def _file(request: HttpRequest, pk: int) -> HttpResponseBase:
    try:
        attachment, as_reviewer = attachment_get_for_viewer(
            attachment_id=pk, user=request.user
        )
    except AttachmentNotFound:
        raise Http404("No such attachment.") from None
    if as_reviewer:
        transcript_views_record(
            viewer=request.user,
            dialogues=[attachment.message.dialogue],  # type: ignore[union-attr]
            via=f"attachment {attachment.pk}",
        )
    return attachment_response(request, attachment)


def attachment_response(request: HttpRequest, attachment: Any) -> HttpResponseBase:
    """The file of an attachment the caller has allowed the viewer to see (the
    owner's view above, or a share link's): pictures inline, the rest as downloads
    or plain text."""
    if attachment.content_type in INLINE_PICTURES:
        content_type, disposition = attachment.content_type, "inline"
    elif attachment.content_type == "application/pdf":
        content_type, disposition = "application/pdf", "attachment"
    else:
        content_type, disposition = "text/plain; charset=utf-8", "inline"
    if request.GET.get("download") == "1":
        disposition = "attachment"
    return _serve(request, attachment, content_type, disposition)


def _serve(
    request: HttpRequest, attachment: Any, content_type: str, disposition: str
) -> HttpResponseBase:
    filename = attachment.name
    if not isinstance(default_storage, FileSystemStorage):
        # Object store: a short-lived signed link, so the bytes don't pass through us.
        from django.utils.http import content_disposition_header

        header = content_disposition_header(disposition == "attachment", filename)
        params = {"ResponseContentType": content_type}
        if header:
            params["ResponseContentDisposition"] = header
        if isinstance(default_storage, S3Storage):
            url = default_storage.url(attachment.storage_key, parameters=params)
        else:
            url = default_storage.url(attachment.storage_key)
        response: HttpResponseBase = HttpResponseRedirect(url)
        patch_cache_control(response, private=True, no_store=True)
        return response
    etag = '"' + hashlib.sha256(attachment.storage_key.encode()).hexdigest()[:32] + '"'
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponseNotModified()
    else:
        try:
            handle = default_storage.open(attachment.storage_key, "rb")
        except FileNotFoundError:
            raise Http404("No such attachment.") from None
        response = FileResponse(
            handle,
            content_type=content_type,
            as_attachment=disposition == "attachment",
            filename=filename,
        )
    response["ETag"] = etag
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    # The file never changes under its key; a private cache may keep it.
    patch_cache_control(response, private=True, max_age=3600)
    return response
