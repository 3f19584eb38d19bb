"""Usage per user per day, quota overrides, and the user admin with both."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from ..models import UsageDaily, UserQuota
from .filters import UsernameFilter

User = get_user_model()


@admin.register(UsageDaily)
class UsageDailyAdmin(admin.ModelAdmin):
    list_display = (
        "day",
        "user",
        "messages",
        "prompt_tokens",
        "completion_tokens",
        "estimated_tokens",
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
        "estimated_tokens",
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
    list_display = (
        "user",
        "daily_tokens",
        "daily_messages",
        "daily_images",
        "updated_at",
    )
    list_editable = ("daily_tokens", "daily_messages", "daily_images")
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
    fields = ("daily_tokens", "daily_messages", "daily_images")
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
