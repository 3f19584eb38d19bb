"""List filters: a username box instead of a dropdown of every user, reply status,
and the review queue's open-by-default state."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Exists, OuterRef

from ..models import Message


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
