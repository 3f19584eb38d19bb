from __future__ import annotations

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import services
from .models import GeneratedImage


@admin.register(GeneratedImage)
class GeneratedImageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "thumbnail",
        "short_prompt",
        "status",
        "model",
        "size",
        "owner",
        "dialogue",
        "created_at",
    ]
    list_display_links = ["id", "short_prompt"]
    list_filter = ["status", "model", "size", "created_at"]
    search_fields = ["prompt", "revised_prompt"]
    list_select_related = ["message__dialogue__owner"]
    raw_id_fields = ["message"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "preview",
        "storage_key",
        "content_type",
        "width",
        "height",
        "revised_prompt",
        "status",
        "error_code",
        "error_message",
        "created_at",
        "updated_at",
    ]
    fields = [
        "preview",
        "message",
        "prompt",
        "model",
        "size",
        *readonly_fields[1:],
    ]
    actions = ["rerender_selected"]

    def _img(self, obj: GeneratedImage, height: int) -> str:
        if not obj.storage_key:
            return "—"
        url = reverse("image-file", args=[obj.pk])
        return format_html(
            '<a href="{}"><img src="{}" alt="" loading="lazy" height="{}"></a>',
            url,
            url,
            height,
        )

    @admin.display(description=_("image"))
    def thumbnail(self, obj: GeneratedImage) -> str:
        return self._img(obj, 64)

    @admin.display(description=_("preview"))
    def preview(self, obj: GeneratedImage) -> str:
        return self._img(obj, 320)

    @admin.display(description=_("prompt"))
    def short_prompt(self, obj: GeneratedImage) -> str:
        return obj.prompt if len(obj.prompt) <= 60 else obj.prompt[:59] + "…"

    @admin.display(description=_("owner"), ordering="message__dialogue__owner")
    def owner(self, obj: GeneratedImage) -> object:
        return obj.message.dialogue.owner

    @admin.display(description=_("dialogue"), ordering="message__dialogue")
    def dialogue(self, obj: GeneratedImage) -> object:
        return obj.message.dialogue

    @admin.action(description=_("Re-render selected images"))
    def rerender_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        ok = failed = 0
        for image in queryset.order_by("pk"):
            image = async_to_sync(services.image_rerender)(image=image)
            if image.error_code:
                failed += 1
            else:
                ok += 1
        if ok:
            self.message_user(
                request,
                ngettext("Re-rendered %d image.", "Re-rendered %d images.", ok) % ok,
                messages.SUCCESS,
            )
        if failed:
            self.message_user(
                request,
                ngettext(
                    "%d image could not be re-rendered; see its error.",
                    "%d images could not be re-rendered; see their errors.",
                    failed,
                )
                % failed,
                messages.WARNING,
            )

    # Deleting rows must not leave their files behind.
    def delete_model(self, request: HttpRequest, obj: GeneratedImage) -> None:
        services.images_delete(images=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        services.images_delete(images=queryset)
