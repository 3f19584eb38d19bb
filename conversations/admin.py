"""Staff review in the Django admin: transcripts (read-only and audited), flags and the
review queue, usage and quotas, exports.

Reading what users wrote needs the `conversations.review_dialogue` permission on top
of the model permissions: without it a staff member sees dialogue metadata (owner,
title, counts) but no message text, anywhere. List pages annotate their counts with
correlated subqueries, so a page costs the same few queries however large the tables.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Aggregate,
    Count,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator, smart_split, unescape_string_literal

from .models import Dialogue, Flag, Message, TranscriptView, UsageDaily, UserQuota
from .rendering import render_markdown
from .services.exports import dialogues_export_csv, dialogues_export_json
from .services.review import (
    dialogues_flag,
    flag_create,
    flags_resolve,
    transcript_view_record,
    transcript_views_record,
)

REVIEW_PERM = "conversations.review_dialogue"
User = get_user_model()


def can_review(request: HttpRequest) -> bool:
    return request.user.has_perm(REVIEW_PERM)


def _image_url(image_id: int) -> str:
    try:
        return reverse("image-file", args=[image_id])
    except NoReverseMatch:  # the imaging app's URLs not wired yet: the documented path
        return f"/images/{image_id}/"


def _subquery_int(queryset: QuerySet, group_by: str, aggregate: Aggregate) -> Coalesce:
    """A correlated aggregate over `queryset` (filtered on OuterRef("pk")), 0 if empty."""
    grouped = queryset.order_by().values(group_by).annotate(v=aggregate).values("v")
    return Coalesce(Subquery(grouped, output_field=IntegerField()), 0)


MAX_SEARCH_WORDS = 5
# Past this many matching dialogues a word is matched in SQL instead of by id list.
SEARCH_ID_CAP = 5000


def _dialogues_with_text(word: str) -> Q | Exists:
    matching = Message.objects.filter(content__icontains=word).order_by()
    ids = list(
        matching.values_list("dialogue_id", flat=True).distinct()[: SEARCH_ID_CAP + 1]
    )
    if len(ids) > SEARCH_ID_CAP:
        return Exists(matching.filter(dialogue=OuterRef("pk")))
    return Q(pk__in=ids)


# --- Filters -----------------------------------------------------------------------


class UsernameFilter(admin.SimpleListFilter):
    """A text box for an exact username instead of a dropdown of every user."""

    title = "user"
    parameter_name = "username"
    user_field = "user"
    template = "admin/conversations/input_filter.html"

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        value = (self.value() or "").strip()
        if not value:
            return queryset
        return queryset.filter(**{f"{self.user_field}__username": value})

    def choices(self, changelist):
        yield {
            "selected": not self.value(),
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": "All",
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "hidden": [
                (k, v) for k, v in changelist.params.items() if k != self.parameter_name
            ],
        }


class OwnerFilter(UsernameFilter):
    title = "owner"
    parameter_name = "owner"
    user_field = "owner"


class ViewerFilter(UsernameFilter):
    title = "viewer"
    parameter_name = "viewer"
    user_field = "viewer"


class ReplyStatusFilter(admin.SimpleListFilter):
    title = "reply status"
    parameter_name = "status"
    STATUSES = {
        "problem": [Message.Status.FAILED, Message.Status.INTERRUPTED],
        "failed": [Message.Status.FAILED],
        "interrupted": [Message.Status.INTERRUPTED],
        "streaming": [Message.Status.STREAMING],
    }

    def lookups(self, request, model_admin):
        return [
            ("problem", "has failed or interrupted replies"),
            ("failed", "has failed replies"),
            ("interrupted", "has interrupted replies"),
            ("streaming", "is streaming now"),
        ]

    def queryset(self, request, queryset):
        statuses = self.STATUSES.get(self.value() or "")
        if not statuses:
            return queryset
        return queryset.filter(
            Exists(Message.objects.filter(dialogue=OuterRef("pk"), status__in=statuses))
        )


class FlagStateFilter(admin.SimpleListFilter):
    """The review queue: open flags unless asked otherwise."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("open", "Needs review"), ("resolved", "Resolved"), ("all", "All")]

    def choices(self, changelist):
        current = self.value() or "open"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": current == lookup,
                "query_string": changelist.get_query_string(
                    {self.parameter_name: lookup}
                ),
                "display": title,
            }

    def queryset(self, request, queryset):
        current = self.value() or "open"
        if current == "open":
            return queryset.filter(resolved=False)
        if current == "resolved":
            return queryset.filter(resolved=True)
        return queryset


# --- Dialogues and their transcripts -------------------------------------------------


class TranscriptInline(admin.TabularInline):
    """The messages of a dialogue, in order, rendered and sanitised; nothing editable."""

    model = Message
    verbose_name = "message"
    verbose_name_plural = "transcript"
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ("created_at", "role", "status", "text", "images", "tokens", "review")
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
        return super().get_queryset(request).prefetch_related("images").order_by("id")

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
            html = format_html("<p><em>(replaced by a later edit)</em></p>{}", html)
        return html

    @admin.display(description="images")
    def images(self, obj: Message) -> str:
        return format_html_join(
            " ",
            '<a href="{0}" target="_blank" rel="noopener"><img src="{0}" alt="image {1}" '
            'width="96" height="96" loading="lazy"></a>',
            ((_image_url(i.pk), i.pk) for i in obj.images.all() if i.storage_key),
        )

    @admin.display(description="tokens")
    def tokens(self, obj: Message) -> str:
        if obj.prompt_tokens is None and obj.completion_tokens is None:
            return "–"
        return f"{obj.prompt_tokens or 0} + {obj.completion_tokens or 0}"

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
        "last_activity_at",
        "flagged",
        "open_flags",
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
                    "flagged",
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
        "flagged",
        "pinned",
        "summary",
    )

    def get_queryset(self, request):
        messages = Message.objects.filter(dialogue=OuterRef("pk"))
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=_subquery_int(messages, "dialogue", Count("*")),
                tokens_used=_subquery_int(
                    messages,
                    "dialogue",
                    Sum(
                        Coalesce("prompt_tokens", 0) + Coalesce("completion_tokens", 0)
                    ),
                ),
                open_flags=_subquery_int(
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
                condition |= _dialogues_with_text(bit)
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

    @admin.display(description="open flags", ordering="open_flags")
    def open_flags(self, obj: Dialogue) -> int:
        return obj.open_flags  # type: ignore[attr-defined]

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
        "flagged",
    )
    list_select_related = ("user",)
    list_filter = ("role", "status", "flagged", "replaced")
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
        "error_code",
        "error_message",
        "replaced",
        "flagged",
        "created_at",
    )
    fields = readonly_fields

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

    @admin.display(description="text")
    def excerpt(self, obj: Message) -> str:
        return Truncator(obj.content).chars(80)

    @admin.display(description="text")
    def text(self, obj: Message) -> str:
        return render_markdown(obj.content)


# --- Review queue -------------------------------------------------------------------


class FlagAdminForm(forms.ModelForm):
    class Meta:
        model = Flag
        fields = ("dialogue", "message", "reason", "reviewer_notes")


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

    list_display = ("viewed_at", "viewer", "dialogue_repr", "dialogue_link")
    list_select_related = ("viewer",)
    list_filter = (ViewerFilter, ("viewed_at", admin.DateFieldListFilter))
    search_fields = ("dialogue_repr",)
    date_hierarchy = "viewed_at"
    ordering = ("-viewed_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row
    fields = ("viewed_at", "viewer", "dialogue", "dialogue_repr")
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

    @admin.display(description="dialogue", ordering="dialogue_id")
    def dialogue_link(self, obj: TranscriptView) -> str:
        if obj.dialogue_id is None:
            return "(deleted)"
        url = reverse("admin:conversations_dialogue_change", args=[obj.dialogue_id])
        return format_html('<a href="{}">open</a>', url)


# --- Usage and quotas ----------------------------------------------------------------


@admin.register(UsageDaily)
class UsageDailyAdmin(admin.ModelAdmin):
    list_display = (
        "day",
        "user",
        "messages",
        "prompt_tokens",
        "completion_tokens",
        "images",
    )
    list_select_related = ("user",)
    list_filter = (UsernameFilter, ("day", admin.DateFieldListFilter))
    search_fields = ("user__username",)
    date_hierarchy = "day"
    ordering = ("-day", "user_id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row
    readonly_fields = (
        "user",
        "day",
        "messages",
        "prompt_tokens",
        "completion_tokens",
        "images",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UserQuota)
class UserQuotaAdmin(admin.ModelAdmin):
    list_display = ("user", "daily_tokens", "daily_messages", "updated_at")
    list_editable = ("daily_tokens", "daily_messages")
    list_select_related = ("user",)
    list_filter = (UsernameFilter,)
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    ordering = ("user__username",)


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    max_num = 1
    extra = 1  # the empty form shows without JS; saved only when filled in
    fields = ("daily_tokens", "daily_messages")
    verbose_name = "quota override"
    verbose_name_plural = "quota override (empty = the site's default)"


admin.site.unregister(User)


@admin.register(User)
class ChatUserAdmin(UserAdmin):
    """Django's user admin plus the quota override and today's usage."""

    inlines = (*UserAdmin.inlines, UserQuotaInline)
    list_display = (*UserAdmin.list_display, "usage_today")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per choice over every row

    def get_queryset(self, request):
        today = UsageDaily.objects.filter(
            user=OuterRef("pk"), day=timezone.now().date()
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                today_messages=Coalesce(Subquery(today.values("messages")[:1]), 0),
                today_tokens=Coalesce(
                    Subquery(
                        today.annotate(
                            t=F("prompt_tokens") + F("completion_tokens")
                        ).values("t")[:1]
                    ),
                    0,
                ),
            )
        )

    @admin.display(description="today (messages / tokens)", ordering="today_tokens")
    def usage_today(self, obj) -> str:
        url = reverse("admin:conversations_usagedaily_changelist")
        return format_html(
            '<a href="{}?username={}">{} / {}</a>',
            url,
            obj.get_username(),
            obj.today_messages,
            obj.today_tokens,
        )
