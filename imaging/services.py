"""Image use cases: create a pending image, render it, re-render it, delete its files.

The bytes live in Django's default storage (local media or an S3-compatible store)
under generated keys; the database keeps the key only. Rendering never raises a
provider error: a failed image carries `error_code`/`error_message` instead.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterable
from typing import Any
from uuid import uuid4

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from conversations.exceptions import BadRequest, TooLong

from . import selectors
from .exceptions import ImageGenerationError
from .generators import (
    DEMO_IMAGE_MODEL,
    EXTENSIONS,
    IMAGE_TOOL_SCHEMA,
    GeneratedPicture,
    ImageGenerator,
    get_image_generator,
    image_model_default,
)
from .models import GeneratedImage

logger = logging.getLogger(__name__)


def image_size_validate(size: str | None) -> str:
    """`size` if it is one of settings.IMAGE_SIZES; the first of them when empty."""
    sizes = list(settings.IMAGE_SIZES)
    if not size:
        return sizes[0]
    size = size.strip().lower()
    if size not in sizes:
        raise BadRequest(f"Unsupported image size. Choose one of: {', '.join(sizes)}.")
    return size


def image_create_pending(
    *, message: Any, prompt: str, size: str | None, model: str | None = None
) -> GeneratedImage:
    """Store the request for a picture on `message`; `image_render` draws it."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise BadRequest(_("Describe the picture you want after /image."))
    limit = settings.IMAGE_PROMPT_MAX_CHARS
    if len(prompt) > limit:
        raise TooLong(
            format_lazy(
                _("The picture description is too long (at most {limit} characters)."),
                limit=limit,
            )
        )
    return GeneratedImage.objects.create(
        message=message,
        prompt=prompt,
        size=image_size_validate(size),
        model=(model or image_model_default())[:100],
    )


# --- Recognising requests (for the engine) ----------------------------------------

_IMAGE_COMMAND = re.compile(r"(?:/image(?:\s+|$)|image:)(?P<prompt>.*)", re.DOTALL)


def image_prompt_from_text(text: str) -> str | None:
    """The prompt of a chat message that asks for a picture, else None.

    "/image a fox" and "image: a fox" give "a fox"; a bare "/image" gives "" (which
    image_create_pending refuses with a readable BadRequest).
    """
    found = _IMAGE_COMMAND.match(text.lstrip())
    return found.group("prompt").strip() if found else None


def image_tool_schema() -> dict[str, Any]:
    """The generate_image tool to offer a chat model, sizes limited to IMAGE_SIZES."""
    schema = copy.deepcopy(IMAGE_TOOL_SCHEMA)
    schema["function"]["parameters"]["properties"]["size"]["enum"] = list(
        settings.IMAGE_SIZES
    )
    return schema


def image_tool_arguments(arguments: str | dict[str, Any]) -> tuple[str, str | None]:
    """(prompt, size) from a generate_image tool call's arguments (JSON text or dict).

    A size the site does not offer is dropped (the default is used), since a model
    may invent one; a missing prompt or malformed JSON raises BadRequest.
    """
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            raise BadRequest(
                "The image request from the model was malformed."
            ) from None
    if not isinstance(arguments, dict) or not isinstance(arguments.get("prompt"), str):
        raise BadRequest("The image request from the model had no description.")
    size = arguments.get("size")
    if not isinstance(size, str) or size.strip().lower() not in settings.IMAGE_SIZES:
        size = None
    return arguments["prompt"], size


def image_tool_result(image: GeneratedImage) -> str:
    """The tool message content to give the model after a generate_image call."""
    if image.status == GeneratedImage.Status.COMPLETE:
        result: dict[str, Any] = {
            "status": "complete",
            "note": "The picture is already shown to the user; do not link or embed it.",
            "width": image.width,
            "height": image.height,
        }
        if image.revised_prompt:
            result["revised_prompt"] = image.revised_prompt
    else:
        result = {"status": "failed", "error": image.error_message}
    return json.dumps(result)


# --- Storage ------------------------------------------------------------------------


def _new_key(content_type: str) -> str:
    # Generated, never derived from user text: no traversal, no guessable names.
    now = timezone.now()
    return f"images/{now:%Y/%m}/{uuid4().hex}.{EXTENSIONS[content_type]}"


def _delete_quietly(key: str) -> bool:
    try:
        default_storage.delete(key)
    except Exception:
        logger.exception("could not delete image file %s", key)
        return False
    return True


def _save(picture: GeneratedPicture) -> str:
    key = _new_key(picture.content_type)
    try:
        return default_storage.save(key, ContentFile(picture.data))
    except Exception as exc:
        logger.exception("could not store image file %s", key)
        # A local write can fail half-way; leave nothing behind.
        _delete_quietly(key)
        raise ImageGenerationError(
            "storage_error",
            "The picture was made but could not be saved. Please try again.",
        ) from exc


# Storage calls may be slow network round trips: keep them off the thread that
# serialises database access.
_save_async = sync_to_async(_save, thread_sensitive=False)
_delete_async = sync_to_async(_delete_quietly, thread_sensitive=False)


# --- Database -------------------------------------------------------------------------


def _swap_in(
    image: GeneratedImage, *, key: str, picture: GeneratedPicture, model: str, size: str
) -> str:
    """Point the row at the new file; returns the key it replaced ("" if none)."""
    with transaction.atomic():
        row = GeneratedImage.objects.select_for_update().get(pk=image.pk)
        old_key = row.storage_key
        changes = {
            "storage_key": key,
            "content_type": picture.content_type,
            "width": picture.width,
            "height": picture.height,
            "revised_prompt": picture.revised_prompt,
            "model": model,
            "size": size,
            "status": GeneratedImage.Status.COMPLETE,
            "error_code": "",
            "error_message": "",
        }
        for field, value in changes.items():
            setattr(row, field, value)
            setattr(image, field, value)
        row.save(update_fields=[*changes, "updated_at"])
        image.updated_at = row.updated_at
    return old_key if old_key != key else ""


def _record_failure(image: GeneratedImage, *, code: str, message: str) -> None:
    """A picture that already exists stays complete (the old file is still served)
    and carries the error of the attempt; one that never rendered becomes failed."""
    with transaction.atomic():
        row = GeneratedImage.objects.select_for_update().get(pk=image.pk)
        row.error_code, row.error_message = code, message
        if not (row.status == GeneratedImage.Status.COMPLETE and row.storage_key):
            row.status = GeneratedImage.Status.FAILED
        row.save(update_fields=["status", "error_code", "error_message", "updated_at"])
    for field in ("status", "error_code", "error_message", "updated_at", "storage_key"):
        setattr(image, field, getattr(row, field))


# --- Rendering ------------------------------------------------------------------------


async def _render(
    image: GeneratedImage, *, generator: ImageGenerator | None, model: str, size: str
) -> GeneratedImage:
    generator = generator or get_image_generator()
    try:
        picture = await generator.generate(prompt=image.prompt, size=size, model=model)
        key = await _save_async(picture)
    except ImageGenerationError as exc:
        failure = exc
    except Exception:
        logger.exception("image %s: unexpected generator failure", image.pk)
        failure = ImageGenerationError(
            "internal",
            "Something went wrong while drawing the picture. Please try again.",
        )
    else:
        try:
            old_key = await database_sync_to_async(_swap_in)(
                image, key=key, picture=picture, model=model, size=size
            )
        except GeneratedImage.DoesNotExist:
            # Deleted while drawing (its dialogue was removed): keep no orphan file.
            await _delete_async(key)
            image.status = GeneratedImage.Status.FAILED
            image.error_code, image.error_message = (
                "not_found",
                "The image was deleted.",
            )
            return image
        except BaseException:
            await _delete_async(key)
            raise
        # Only now that the row points at the new file may the old one go.
        if old_key:
            await _delete_async(old_key)
        return image
    logger.info("image %s failed: %s %s", image.pk, failure.code, failure.message)
    try:
        await database_sync_to_async(_record_failure)(
            image, code=failure.code, message=failure.message
        )
    except GeneratedImage.DoesNotExist:
        image.status = GeneratedImage.Status.FAILED
        image.error_code, image.error_message = failure.code, str(failure.message)
    return image


def _stored_model(image: GeneratedImage) -> str:
    """The image's model, unless the demo drew it and a real generator is set up now."""
    if image.model and image.model != DEMO_IMAGE_MODEL:
        return image.model
    return image_model_default()


async def image_render(
    *, image: GeneratedImage, generator: ImageGenerator | None = None
) -> GeneratedImage:
    """Draw a pending image and store it. Returns the image, complete or failed;
    provider errors never escape (they are recorded on the image)."""
    return await _render(
        image,
        generator=generator,
        model=_stored_model(image),
        size=image.size or image_size_validate(None),
    )


async def image_rerender(
    *,
    image: GeneratedImage,
    generator: ImageGenerator | None = None,
    model: str | None = None,
    size: str | None = None,
) -> GeneratedImage:
    """Draw an image again from its stored prompt, optionally with another model/size.

    The new file is written first; the row then switches to it and only after that
    is the old file deleted. On failure the old file and key stay, a complete image
    stays complete, and `error_code`/`error_message` record what went wrong; success
    clears them. So `image.error_code == ""` afterwards means it worked.
    Raises BadRequest for a `size` outside settings.IMAGE_SIZES.
    """
    return await _render(
        image,
        generator=generator,
        model=model or _stored_model(image),
        size=image_size_validate(size or image.size or None),
    )


def image_file_store(*, data: bytes, content_type: str) -> str:
    """Store the bytes of a picture brought from elsewhere (an import); the key.

    Only the types images are served as; the caller removes the file
    (image_delete_files) if what it belongs to is not kept."""
    if content_type not in EXTENSIONS:
        raise ValueError(f"unsupported image type {content_type!r}")
    return default_storage.save(_new_key(content_type), ContentFile(data))


# --- Deleting ---------------------------------------------------------------------------


def image_delete_files(*, keys: Iterable[str]) -> int:
    """Remove files from the storage; failures are logged. Returns how many went."""
    return sum(1 for key in keys if key and _delete_quietly(key))


def images_delete_for_dialogue(*, dialogue: Any) -> int:
    """Schedule the removal of a dialogue's image files for after the commit.

    Call it in the dialogue-delete service before (or in the same transaction as)
    deleting the dialogue: it reads the keys now and deletes the files once the
    transaction commits, so a rolled-back delete keeps its pictures.
    Returns how many files are scheduled.
    """
    keys = selectors.image_keys_for_dialogue(dialogue=dialogue)
    if keys:
        transaction.on_commit(lambda: image_delete_files(keys=keys))
    return len(keys)


def images_delete(*, images: Iterable[GeneratedImage]) -> int:
    """Delete image rows and, after the commit, their files. Returns rows deleted."""
    images = list(images)
    keys = selectors.image_keys_for(images=images)
    with transaction.atomic():
        deleted, _per_model = GeneratedImage.objects.filter(
            pk__in=[i.pk for i in images]
        ).delete()
        if keys:
            transaction.on_commit(lambda: image_delete_files(keys=keys))
    return deleted
