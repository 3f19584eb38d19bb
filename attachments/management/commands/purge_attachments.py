"""Delete uploads that were never sent with a message (and their files)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from attachments.services import attachments_purge_unsent


class Command(BaseCommand):
    help = (
        "Delete attachments uploaded but never sent with a message, older than "
        "--hours (24), with their files. Run it daily (cron or a systemd timer)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--hours",
            type=float,
            default=24.0,
            help="Age past which an unsent upload is deleted (default 24).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hours = options["hours"]
        if hours < 1:
            raise CommandError(
                "--hours must be at least 1: uploads in use are younger."
            )
        deleted = attachments_purge_unsent(older_than=timedelta(hours=hours))
        self.stdout.write(f"deleted {deleted} unsent upload(s) older than {hours:g} h")
