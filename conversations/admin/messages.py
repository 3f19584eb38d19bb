"""Messages, read-only; their text shows to reviewers only, and opening one is audited."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from ..models import Message
from ..rendering import render_markdown
from ..services.review import transcript_view_record
from .base import MathMedia, can_review, flag_mark


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Read-only; the text shows to reviewers only."""

    list_display = (
        "id",
        "dialogue_link",
        "user",
        "role",
        "status",
        "model",
        "created_at",
        "review_state",
    )
    list_select_related = ("user",)
    list_filter = ("role", "status", "flagged", "replaced", "usage_estimated")
    ordering = ("-id",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row
    list_per_page = 50
    readonly_fields = (
        "dialogue",
        "user",
        "role",
        "status",
        "model",
        "text",
        "prompt_tokens",
        "completion_tokens",
        "usage_estimated",
        "cut_off",
        "error_code",
        "error_message",
        "replaced",
        "review_state",
        "created_at",
    )
    fields = readonly_fields
    Media = MathMedia

    def get_list_display(self, request):
        if can_review(request):
            return (*self.list_display, "excerpt")
        return self.list_display

    def get_search_fields(self, request):
        return ("content",) if can_review(request) else ()

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not can_review(request):
            raise PermissionDenied
        response = super().change_view(request, object_id, form_url, extra_context)
        message = getattr(response, "context_data", {}).get("original")
        if (
            request.method == "GET"
            and response.status_code == 200
            and message is not None
        ):
            transcript_view_record(viewer=request.user, dialogue=message.dialogue)
        return response

    @admin.display(description="dialogue", ordering="dialogue_id")
    def dialogue_link(self, obj: Message) -> str:
        url = reverse("admin:conversations_dialogue_change", args=[obj.dialogue_id])
        return format_html('<a href="{}">#{}</a>', url, obj.dialogue_id)

    @admin.display(description="review", ordering="-flagged")
    def review_state(self, obj: Message) -> str:
        return flag_mark(obj.flagged)

    @admin.display(description="text")
    def excerpt(self, obj: Message) -> str:
        return Truncator(obj.content).chars(80)

    @admin.display(description="text")
    def text(self, obj: Message) -> str:
        return render_markdown(obj.content)
