"""Generated images, kept in the default storage under generated keys."""

from django.db import models


class GeneratedImage(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        COMPLETE = "complete"
        FAILED = "failed"

    message = models.ForeignKey(
        "conversations.Message", on_delete=models.CASCADE, related_name="images"
    )
    prompt = models.TextField()
    revised_prompt = models.TextField(blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    size = models.CharField(max_length=20, blank=True, default="")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    # The storage key only: never base64, never a provider URL (they expire).
    storage_key = models.CharField(max_length=300, blank=True, default="")
    content_type = models.CharField(max_length=50, blank=True, default="image/png")
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    error_code = models.CharField(max_length=40, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["message", "id"], name="image_message_idx")]

    def __str__(self) -> str:
        return f"image #{self.pk}"
