"""Dialogues with their read-only, audited transcripts, and messages.

Without the review permission a staff member sees metadata (owner, title, counts)
but no message text: change views answer 403 and search skips message text."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import smart_split, unescape_string_literal

from attachments.selectors import attachments_prefetch

from ..models import Dialogue, Flag, Message
from ..rendering import render_markdown
from ..services.exports import dialogues_export_csv, dialogues_export_json
from ..services.review import (
    dialogues_flag,
    transcript_view_record,
    transcript_views_record,
)
from .base import (
    MAX_SEARCH_WORDS,
    MathMedia,
    can_review,
    dialogues_with_text,
    flag_mark,
    image_url,
    subquery_int,
)
from .filters import OwnerFilter, ReplyStatusFilter


class TranscriptInline(admin.TabularInline):
    """The messages of a dialogue, in order, rendered and sanitised; nothing editable."""

    model = Message
    verbose_name = "message"
    verbose_name_plural = "transcript"
    extra = 0
    can_delete = False
    show_change_link = False
    fields = (
        "created_at",
        "role",
        "status",
        "text",
        "attachments",
        "images",
        "tokens",
        "review",
    )
    readonly_fields = fields

    def has_view_permission(self, request, obj=None) -> bool:
        return can_review(request)

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_queryset(self, request):
        # Whether the message a reply answers is off the shown branch too.
        asked = Message.objects.filter(pk=OuterRef("parent_id"))
        return (
            super()
            .get_queryset(request)
            .prefetch_related("images", attachments_prefetch())
            .annotate(question_replaced=Subquery(asked.values("replaced")[:1]))
            .order_by("id")
        )

    @admin.display(description="text")
    def text(self, obj: Message) -> str:
        html = render_markdown(obj.content)
        if obj.error_code:
            html = format_html(
                "{}<p><strong>error {}:</strong> {}</p>",
                html,
                obj.error_code,
                obj.error_message,
            )
        if obj.replaced:
            # The question still shown: this is another version of its reply
            # (regenerated); otherwise an edit left the whole turn behind.
            sibling = obj.role == Message.Role.ASSISTANT and not getattr(
                obj, "question_replaced", True
            )
            note = (
                "(another version of this reply, not on the shown branch)"
                if sibling
                else "(not on the shown branch)"
            )
            html = format_html("<p><em>{}</em></p>{}", note, html)
        return html

    @admin.display(description="attachments")
    def attachments(self, obj: Message) -> str:
        """Pictures as thumbnails, documents as links; each opening is audited."""
        pictures = format_html_join(
            " ",
            '<a href="{0}" target="_blank" rel="noopener"><img src="{0}" alt="{1}" '
            'title="{1}" width="96" loading="lazy"></a>',
            (
                (reverse("attachment-file", args=[a.pk]), a.name)
                for a in obj.attachments.all()
                if a.kind == "image"
            ),
        )
        documents = format_html_join(
            "",
            '<br><a href="{}" target="_blank" rel="noopener">📄 {}</a> ({}, {} bytes)',
            (
                (
                    reverse("attachment-file", args=[a.pk]),
                    a.name,
                    a.content_type,
                    a.size,
                )
                for a in obj.attachments.all()
                if a.kind != "image"
            ),
        )
        return format_html("{}{}", pictures, documents)

    @admin.display(description="images")
    def images(self, obj: Message) -> str:
        return format_html_join(
            " ",
            '<a href="{0}" target="_blank" rel="noopener"><img src="{0}" alt="image {1}" '
            'width="96" height="96" loading="lazy"></a>',
            ((image_url(i.pk), i.pk) for i in obj.images.all() if i.storage_key),
        )

    @admin.display(description="tokens")
    def tokens(self, obj: Message) -> str:
        if obj.prompt_tokens is None and obj.completion_tokens is None:
            return "–"
        tokens = f"{obj.prompt_tokens or 0} + {obj.completion_tokens or 0}"
        # Counted by us, not reported by the model server.
        return f"{tokens} (estimated)" if obj.usage_estimated else tokens

    @admin.display(description="review")
    def review(self, obj: Message) -> str:
        url = reverse("admin:conversations_flag_add")
        mark = "⚑ flagged · " if obj.flagged else ""
        return format_html(
            '{}<a href="{}?dialogue={}&amp;message={}">flag</a>',
            mark,
            url,
            obj.dialogue_id,
            obj.pk,
        )


class FlagReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), max_length=2000
    )


@admin.register(Dialogue)
class DialogueAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "title_text",
        "owner_link",
        "model",
        "message_count",
        "tokens_used",
        "last_activity",
        "review_state",
    )
    list_select_related = ("owner",)
    list_filter = (
        OwnerFilter,
        "model",
        ("last_activity_at", admin.DateFieldListFilter),
        ReplyStatusFilter,
        "flagged",
    )
    search_fields = ("title", "owner__username")  # and message text: get_search_results
    search_help_text = "Title, owner username, or (reviewers) words in the messages."
    ordering = ("-last_activity_at", "-id")
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row
    actions = ("flag_selected", "export_json", "export_csv")
    inlines = (TranscriptInline,)
    Media = MathMedia
    fieldsets = (
        (
            None,
            {"fields": ("owner", "title", "model", "system_prompt", "review_links")},
        ),
        (
            "Activity",
            {
                "fields": (
                    "created_at",
                    "last_activity_at",
                    "review_state",
                    "pinned",
                    "summary",
                )
            },
        ),
    )
    readonly_fields = (
        "owner",
        "title",
        "model",
        "system_prompt",
        "review_links",
        "created_at",
        "last_activity_at",
        "review_state",
        "pinned",
        "summary",
    )

    def get_queryset(self, request):
        messages = Message.objects.filter(dialogue=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=subquery_int(messages, "dialogue", Count("*")),
                tokens_used=subquery_int(
                    messages,
                    "dialogue",
                    Sum(
                        Coalesce("prompt_tokens", 0) + Coalesce("completion_tokens", 0)
                    ),
                ),
                open_flags=subquery_int(
                    Flag.objects.filter(dialogue=OuterRef("pk"), resolved=False),
                    "dialogue",
                    Count("*"),
                ),
            )
        )

    def get_search_results(self, request, queryset, search_term):
        """Every word must match the title, the owner's username or (reviewers only:
        it would leak contents otherwise) the text of one of the messages.

        Message text has no trigram index, so matching it scans the messages; the
        dialogue ids matching a word are read once and reused by the page and its
        count instead of scanning twice. No join, so no duplicate rows, no DISTINCT.
        """
        for bit in list(smart_split(search_term))[:MAX_SEARCH_WORDS]:
            if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
                bit = unescape_string_literal(bit)
            condition = Q(title__icontains=bit) | Q(owner__username__icontains=bit)
            if can_review(request):
                condition |= dialogues_with_text(bit)
            queryset = queryset.filter(condition)
        return queryset, False

    # Read-only: staff review transcripts, they never rewrite them.
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_review_permission(self, request) -> bool:
        return can_review(request)

    def has_flag_permission(self, request) -> bool:
        return request.user.has_perm("conversations.add_flag")

    def get_list_display_links(self, request, list_display):
        return ("id", "title_text") if can_review(request) else None

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not can_review(request):
            raise PermissionDenied
        response = super().change_view(request, object_id, form_url, extra_context)
        dialogue = getattr(response, "context_data", {}).get("original")
        if (
            request.method == "GET"
            and response.status_code == 200
            and dialogue is not None
        ):
            transcript_view_record(viewer=request.user, dialogue=dialogue)
        return response

    def changelist_view(self, request, extra_context=None):
        # Refuse a forged export action outright rather than silently ignoring it.
        if (
            request.method == "POST"
            and request.POST.get("action") in {"export_json", "export_csv"}
            and not can_review(request)
        ):
            raise PermissionDenied
        return super().changelist_view(request, extra_context)

    @admin.display(description="title", ordering="title")
    def title_text(self, obj: Dialogue) -> str:
        return obj.title or "(untitled)"

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, obj: Dialogue) -> str:
        url = reverse("admin:conversations_dialogue_changelist")
        return format_html(
            '<a href="{}?owner={}">{}</a>', url, obj.owner.username, obj.owner
        )

    @admin.display(description="messages", ordering="message_count")
    def message_count(self, obj: Dialogue) -> int:
        return obj.message_count  # type: ignore[attr-defined]

    @admin.display(description="tokens", ordering="tokens_used")
    def tokens_used(self, obj: Dialogue) -> int:
        return obj.tokens_used  # type: ignore[attr-defined]

    @admin.display(description="last activity", ordering="last_activity_at")
    def last_activity(self, obj: Dialogue) -> str:
        return date_format(timezone.localtime(obj.last_activity_at), "Y-m-d H:i")

    @admin.display(description="review", ordering="-open_flags")
    def review_state(self, obj: Dialogue) -> str:
        """Flagged and open flags in one column, marked so flagged reads as a warning
        (Django's boolean icons would show a green tick for it)."""
        return flag_mark(obj.flagged, open_flags=obj.open_flags)  # type: ignore[attr-defined]

    @admin.display(description="review")
    def review_links(self, obj: Dialogue) -> str:
        flags = reverse("admin:conversations_flag_changelist")
        add = reverse("admin:conversations_flag_add")
        return format_html(
            '<a href="{}?dialogue={}">Flag this dialogue</a> · '
            '<a href="{}?dialogue__id__exact={}&amp;state=all">Its flags</a>',
            add,
            obj.pk,
            flags,
            obj.pk,
        )

    @admin.action(
        description="Flag selected dialogues for review", permissions=["flag"]
    )
    def flag_selected(self, request, queryset):
        form = FlagReasonForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            count = dialogues_flag(
                dialogues=queryset,
                created_by=request.user,
                reason=form.cleaned_data["reason"],
            )
            self.message_user(request, f"Flagged {count} dialogue(s) for review.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Flag for review",
            "opts": self.model._meta,
            "queryset": queryset.select_related("owner"),
            "form": form,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, "admin/conversations/dialogue/flag_selected.html", context
        )

    def _export(self, request, queryset, kind: str) -> HttpResponse:
        dialogues = list(queryset.select_related(None).only("id", "title"))
        if kind == "json":
            body, content_type = (
                dialogues_export_json(dialogues=dialogues),
                "application/json",
            )
        else:
            body, content_type = dialogues_export_csv(dialogues=dialogues), "text/csv"
        transcript_views_record(
            viewer=request.user, dialogues=dialogues, via=f"export {kind}"
        )
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="dialogues-{stamp}.{kind}"'
        )
        return response

    @admin.action(
        description="Export selected dialogues as JSON", permissions=["review"]
    )
    def export_json(self, request, queryset):
        return self._export(request, queryset, "json")

    @admin.action(
        description="Export selected dialogues as CSV", permissions=["review"]
    )
    def export_csv(self, request, queryset):
        return self._export(request, queryset, "csv")
