"""The review queue (flags) and the transcript audit trail (superusers only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from ..models import Flag, TranscriptView
from ..services.review import flag_create, flags_resolve
from .filters import FlagStateFilter, ViewerFilter


class FlagAdminForm(forms.ModelForm):
    class Meta:
        model = Flag
        fields = ("dialogue", "message", "reason", "reviewer_notes")

    def clean(self):
        data = super().clean()
        dialogue, message = data.get("dialogue"), data.get("message")
        if dialogue and message and message.dialogue_id != dialogue.pk:
            self.add_error("message", "This message belongs to another dialogue.")
        return data


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    """The "needs review" queue: open flags first, newest first."""

    form = FlagAdminForm
    list_display = (
        "id",
        "created_at",
        "source",
        "dialogue_link",
        "owner",
        "message_link",
        "reason_excerpt",
        "created_by",
        "resolved",
        "resolved_by",
    )
    list_select_related = ("dialogue__owner", "created_by", "resolved_by")
    list_filter = (FlagStateFilter, "source", ("created_at", admin.DateFieldListFilter))
    search_fields = ("reason", "reviewer_notes", "dialogue__title")
    raw_id_fields = ("dialogue", "message")
    ordering = ("resolved", "-created_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row
    actions = ("resolve_selected",)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "dialogue",
            "message",
            "source",
            "created_by",
            "reason",
            "resolved",
            "resolved_by",
        )

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("dialogue", "message", "reason", "reviewer_notes")
        return (
            "dialogue",
            "message",
            "source",
            "created_by",
            "reason",
            "reviewer_notes",
            "resolved",
            "resolved_by",
        )

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a flag is part of the review record: resolve it instead

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["reviewer_notes", "updated_at"])
            return
        created = flag_create(
            dialogue=obj.dialogue,
            message=obj.message,
            created_by=request.user,
            source=Flag.Source.STAFF,
            reason=obj.reason,
            reviewer_notes=obj.reviewer_notes,
        )
        obj.pk = created.pk
        obj.created_at = created.created_at

    def changelist_view(self, request, extra_context=None):
        extra_context = {"title": "Review queue", **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    @admin.display(description="dialogue", ordering="dialogue_id")
    def dialogue_link(self, obj: Flag) -> str:
        url = reverse("admin:conversations_dialogue_change", args=[obj.dialogue_id])
        return format_html(
            '<a href="{}">{}</a>', url, Truncator(str(obj.dialogue)).chars(40)
        )

    @admin.display(description="owner", ordering="dialogue__owner__username")
    def owner(self, obj: Flag) -> str:
        return obj.dialogue.owner.get_username()

    @admin.display(description="message", ordering="message_id")
    def message_link(self, obj: Flag) -> str:
        if obj.message_id is None:
            return "–"
        url = reverse("admin:conversations_message_change", args=[obj.message_id])
        return format_html('<a href="{}">#{}</a>', url, obj.message_id)

    @admin.display(description="reason")
    def reason_excerpt(self, obj: Flag) -> str:
        return Truncator(obj.reason).chars(80)

    @admin.action(description="Mark selected flags resolved", permissions=["change"])
    def resolve_selected(self, request, queryset):
        count = flags_resolve(flags=queryset, resolved_by=request.user)
        self.message_user(request, f"Resolved {count} flag(s).")


@admin.register(TranscriptView)
class TranscriptViewAdmin(admin.ModelAdmin):
    """The audit trail: superusers only, and nobody edits it."""

    list_display = ("viewed_at", "viewer", "dialogue_link")
    list_select_related = ("viewer",)
    list_filter = (ViewerFilter, ("viewed_at", admin.DateFieldListFilter))
    search_fields = ("dialogue_repr",)
    date_hierarchy = "viewed_at"
    ordering = ("-viewed_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row
    fields = ("viewed_at", "viewer", "dialogue_link")
    readonly_fields = fields

    def has_module_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="dialogue (as it was viewed)", ordering="dialogue_id")
    def dialogue_link(self, obj: TranscriptView) -> str:
        if obj.dialogue_id is None:
            return format_html("{} <em>(deleted since)</em>", obj.dialogue_repr)
        url = reverse("admin:conversations_dialogue_change", args=[obj.dialogue_id])
        return format_html('<a href="{}">{}</a>', url, obj.dialogue_repr)


# --- Usage and quotas ----------------------------------------------------------------
