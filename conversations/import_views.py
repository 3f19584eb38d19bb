"""Import of dialogue files: POST /api/imports/ with one or more `file` fields.

Each file is its own transaction: a bad one imports nothing and its entry says why,
the others still import. The answer: {"results": [summary or {"file", "error"}]}.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from .api_views import api
from .exceptions import BadRequest
from .services.portable import ImportFileInvalid, dialogues_import


@api("POST")
def imports(request: HttpRequest) -> HttpResponse:
    files = request.FILES.getlist("file")
    if not files:
        raise BadRequest("Choose a file to import.", fields={"file": "required"})
    results = []
    for upload in files:
        try:
            raw = upload.read()
            results.append(
                dialogues_import(user=request.user, name=upload.name or "", raw=raw)
            )
        except ImportFileInvalid as exc:
            results.append({"file": upload.name, "error": exc.message})
    failed = all("error" in r for r in results)
    return JsonResponse({"results": results}, status=400 if failed else 200)
