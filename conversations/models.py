"""Dialogues, messages, presets, usage, quotas and the staff review trail."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Dialogue(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="dialogues"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    # A title the user typed is never replaced by an automatic one.
    title_set_by_user = models.BooleanField(default=False)
    model = models.CharField(max_length=100, blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    pinned = models.BooleanField(default=False)
    # Rolling summary of the turns that no longer fit the context window, and the id
    # of the newest message it covers (a checkpoint reused until the dialogue grows).
    summary = models.TextField(blank=True, default="")
    summary_upto_id = models.BigIntegerField(null=True, blank=True)
    summary_tokens = models.PositiveIntegerField(default=0)
    last_activity_at = models.DateTimeField(auto_now_add=True, db_index=True)
    flagged = models.BooleanField(default=False)
    # Where an imported dialogue came from ("chatgpt:<conversation id>"), so importing
    # the same file twice skips what is already here; empty for the others.
    imported_from = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-pinned", "-last_activity_at", "-id"]
        indexes = [
            models.Index(
                fields=["owner", "-pinned", "-last_activity_at", "-id"],
                name="dialogue_list_idx",
            ),
            models.Index(
                fields=["owner", "imported_from"],
                name="dialogue_import_idx",
                condition=~Q(imported_from=""),
            ),
        ]
        permissions = [("review_dialogue", "Can review conversation transcripts")]

    def __str__(self) -> str:
        return self.title or f"Dialogue {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        COMPLETE = "complete"
        STREAMING = "streaming"
        STOPPED = "stopped"
        FAILED = "failed"
        INTERRUPTED = "interrupted"

    dialogue = models.ForeignKey(
        Dialogue, on_delete=models.CASCADE, related_name="messages"
    )
    # Denormalised owner: makes `client_id` unique per user and user scoping one join less.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages"
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.COMPLETE
    )
    model = models.CharField(max_length=100, blank=True, default="")
    client_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 - unique only when set
    # The send that carried this client_id also created the dialogue (guarantee 4).
    created_dialogue = models.BooleanField(default=False)
    seq = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # The server did not report usage: the token counts are our own estimate.
    usage_estimated = models.BooleanField(default=False)
    # The reply ended at its token limit (finish_reason "length"): the text is kept
    # and the user is offered Continue.
    cut_off = models.BooleanField(default=False)
    error_code = models.CharField(max_length=40, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    # The message tree: a user message follows the reply it answers (None: the first
    # turn), a reply the user message it answers. An edit makes a sibling of the
    # edited message, a regenerate a sibling of the reply. A child's id is always
    # larger than its parent's.
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # Off the dialogue's active branch: the messages not replaced are exactly the path
    # shown and sent to the model (services/tree.py keeps this true).
    replaced = models.BooleanField(default=False)
    # The process generating a streaming reply, so a reaper can tell a dead one.
    worker = models.CharField(max_length=64, blank=True, default="")
    flagged = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["dialogue", "id"], name="message_page_idx"),
            # The shown branch: pages, the leaf a send continues, the context.
            models.Index(
                fields=["dialogue", "id"],
                name="message_path_idx",
                condition=Q(replaced=False),
            ),
            models.Index(
                fields=["dialogue", "created_at"], name="message_dialogue_time_idx"
            ),
            models.Index(
                fields=["status"],
                name="message_streaming_idx",
                condition=Q(status="streaming"),
            ),
            models.Index(fields=["user", "created_at"], name="message_user_time_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "client_id"],
                name="message_client_id_per_user",
                condition=Q(client_id__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"{self.role} #{self.pk}"


class Preset(models.Model):
    """A reusable dialogue setup: name, system prompt and model."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presets"
    )
    name = models.CharField(max_length=100)
    system_prompt = models.TextField(blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "name"], name="preset_name_per_owner"
            )
        ]

    def __str__(self) -> str:
        return self.name


class UsageDaily(models.Model):
    """Totals per user per UTC day, bumped once per finished reply or image."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_days"
    )
    day = models.DateField()
    messages = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    # Of prompt + completion tokens, those the server did not report (estimated).
    estimated_tokens = models.PositiveBigIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day", "user_id"]
        verbose_name_plural = "usage (daily)"
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="usage_user_day")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day}"


class UserQuota(models.Model):
    """Per-user override of the daily quotas; null falls back to the settings."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_quota"
    )
    daily_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    daily_messages = models.PositiveIntegerField(null=True, blank=True)
    daily_images = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"quota of {self.user_id}"


class RateEvent(models.Model):
    """One counted action of a user for a sliding-window rate limit on a synchronous
    path (reports, dialogue creation: `services/usage.py`). A user's rows older than
    the window go as that user acts again."""

    class Action(models.TextChoices):
        REPORT = "report"
        DIALOGUE = "dialogue"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    at = models.DateTimeField()

    class Meta:
        ordering = ["at"]
        indexes = [
            models.Index(fields=["user", "action", "at"], name="rate_user_action_at")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.action} {self.at:%H:%M:%S}"


class Flag(models.Model):
    """A dialogue or a message marked for staff review, by staff or by its user."""

    class Source(models.TextChoices):
        USER = "user"
        STAFF = "staff"

    dialogue = models.ForeignKey(
        Dialogue, on_delete=models.CASCADE, related_name="flags"
    )
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="flags", null=True, blank=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    source = models.CharField(max_length=10, choices=Source.choices)
    reason = models.TextField()
    reviewer_notes = models.TextField(blank=True, default="")
    resolved = models.BooleanField(default=False)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["resolved", "-created_at"]
        indexes = [
            models.Index(fields=["resolved", "-created_at"], name="flag_queue_idx")
        ]

    def __str__(self) -> str:
        return f"flag #{self.pk} on dialogue {self.dialogue_id}"


class TranscriptView(models.Model):
    """Audit trail: a staff member opened a transcript."""

    viewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    dialogue = models.ForeignKey(
        Dialogue, on_delete=models.SET_NULL, null=True, related_name="audit_views"
    )
    dialogue_repr = models.CharField(max_length=250)
    viewed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-viewed_at"]

    def __str__(self) -> str:
        return f"{self.viewer_id} viewed {self.dialogue_repr}"


class Share(models.Model):
    """A read-only snapshot link of a dialogue, up to a chosen message.

    The snapshot is the list of message ids on the path to that message when the
    link was made: later turns, edits and branches never show through it. Revoking
    keeps the row (staff see who shared what), the link answers 404 from then on.
    """

    token = models.CharField(max_length=64, unique=True)
    dialogue = models.ForeignKey(
        Dialogue, on_delete=models.CASCADE, related_name="shares"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_shares"
    )
    upto_message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="+"
    )
    title = models.CharField(max_length=200, blank=True, default="")
    message_ids = models.JSONField(default=list)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["dialogue", "-created_at"], name="share_dialogue_idx"),
            models.Index(fields=["owner", "-created_at"], name="share_owner_idx"),
        ]

    def __str__(self) -> str:
        return f"share {self.token[:8]}… of dialogue {self.dialogue_id}"
