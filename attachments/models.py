"""Files a user attaches to a message: pictures for vision models and documents.

The bytes live in the default storage (local media or OSS/S3, like generated images)
under generated keys; the row keeps the key, what the file was found to be by its
content, and a document's extracted text.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Attachment(models.Model):
    class Kind(models.TextChoices):
        IMAGE = "image"
        DOCUMENT = "document"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="attachments"
    )
    # Null between the upload and the send that carries it.
    message = models.ForeignKey(
        "conversations.Message",
        on_delete=models.CASCADE,
        related_name="attachments",
        null=True,
        blank=True,
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # The name the user gave, cleaned; shown only, never used as a storage path.
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()  # stored bytes
    uploaded_bytes = models.PositiveBigIntegerField(default=0)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    storage_key = models.CharField(max_length=300)
    # A document's text, extracted once at upload (capped: `text_truncated`).
    text = models.TextField(blank=True, default="")
    text_truncated = models.BooleanField(default=False)
    # Its place among the message's files, as the user listed them.
    position = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["position", "id"]
        indexes = [
            models.Index(fields=["message", "id"], name="attachment_message_idx"),
            models.Index(
                fields=["created_at"],
                name="attachment_unsent_idx",
                condition=Q(message__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} {self.name}"


class UploadDaily(models.Model):
    """Bytes and files a user uploaded per UTC day, for the daily upload quota."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    day = models.DateField()
    bytes = models.PositiveBigIntegerField(default=0)
    files = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day", "user_id"]
        verbose_name_plural = "uploads (daily)"
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="upload_user_day")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day}"
