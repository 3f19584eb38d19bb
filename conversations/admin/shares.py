"""Share links in the admin: who shared which dialogue, how much of it, and whether
the link still works. Staff revoke links with an action; only reviewers see the link
itself (it shows message text)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from ..models import Share
from ..services.shares import shares_revoke
from .base import can_review


class RevokedFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "active"), ("revoked", "revoked"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(revoked_at__isnull=True)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(Share)
class ShareAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "title_text",
        "owner",
        "dialogue_link",
        "message_count",
        "created_at",
        "state",
        "link",
    )
    list_select_related = ("owner",)
    list_filter = (RevokedFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("title", "owner__username", "=token")
    search_help_text = "Title, owner username, or the exact token."
    raw_id_fields = ("dialogue", "owner", "upto_message")
    ordering = ("-created_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ("revoke_selected",)
    fields = (
        "owner",
        "dialogue",
        "upto_message",
        "title",
        "message_count",
        "created_at",
        "revoked_at",
        "link",
    )
    readonly_fields = fields

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="title", ordering="title")
    def title_text(self, obj: Share) -> str:
        return obj.title or "(untitled)"

    @admin.display(description="dialogue", ordering="dialogue_id")
    def dialogue_link(self, obj: Share) -> str:
        url = reverse("admin:conversations_dialogue_change", args=[obj.dialogue_id])
        return format_html('<a href="{}">#{}</a>', url, obj.dialogue_id)

    @admin.display(description="messages")
    def message_count(self, obj: Share) -> int:
        return len(obj.message_ids)

    @admin.display(description="state", ordering="revoked_at")
    def state(self, obj: Share) -> str:
        return (
            f"revoked {obj.revoked_at:%Y-%m-%d %H:%M}" if obj.revoked_at else "active"
        )

    def get_list_display(self, request):
        shown = super().get_list_display(request)
        return shown if can_review(request) else tuple(c for c in shown if c != "link")

    def get_fields(self, request, obj=None):
        shown = super().get_fields(request, obj)
        return shown if can_review(request) else tuple(f for f in shown if f != "link")

    @admin.display(description="link")
    def link(self, obj: Share) -> str:
        if obj.revoked_at:
            return "–"
        url = reverse("share", args=[obj.token])
        return format_html(
            '<a href="{}" target="_blank" rel="noopener noreferrer">open</a>', url
        )

    @admin.action(description="Revoke the selected links", permissions=["delete"])
    def revoke_selected(self, request, queryset):
        count = shares_revoke(shares=queryset)
        self.message_user(request, f"Revoked {count} link(s).")
