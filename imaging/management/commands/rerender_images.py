"""Re-generate stored images from their prompts.

Examples:
    python manage.py rerender_images --failed-only
    python manage.py rerender_images --user alice --since 2026-01-01 --dry-run
    python manage.py rerender_images --ids 4 8 15 --model gpt-image-1 --size 1024x1024

Each image keeps its old file until the new one is stored. A failure is logged and
counted and the run goes on; the command exits non-zero only when images were
selected and none of them could be re-rendered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import datetime
from datetime import time as dtime
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from conversations.exceptions import BadRequest
from imaging import selectors, services

logger = logging.getLogger(__name__)


def batched(ids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _since(value: str) -> datetime:
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        moment = datetime.combine(day, dtime.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


class Command(BaseCommand):
    help = (
        "Re-generate images from their stored prompts. Filters combine; without any, "
        "every image is re-rendered. Old files stay until the new ones are stored."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--ids", nargs="+", type=int, metavar="ID", help="only these image ids"
        )
        parser.add_argument(
            "--dialogue", type=int, metavar="ID", help="only images of this dialogue"
        )
        parser.add_argument(
            "--user",
            metavar="USERNAME_OR_ID",
            help="only images in this user's dialogues",
        )
        parser.add_argument(
            "--failed-only",
            action="store_true",
            help="only images whose generation failed",
        )
        parser.add_argument(
            "--since",
            metavar="ISO_DATE",
            help="only images created at or after this date/time (UTC "
            "unless an offset is given), e.g. 2026-01-31",
        )
        parser.add_argument("--model", help="generate with this image model instead")
        parser.add_argument(
            "--size",
            help="generate at this size instead "
            f"(one of {', '.join(settings.IMAGE_SIZES)})",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="list what would be re-rendered and change nothing",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=50,
            help="images loaded per database query (default 50)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        size = options["size"]
        if size:
            try:
                size = services.image_size_validate(size)
            except BadRequest as exc:
                raise CommandError(exc.message) from exc
        since = None
        if options["since"]:
            try:
                since = _since(options["since"])
            except ValueError:
                raise CommandError(
                    f"--since {options['since']!r} is not an ISO date or date-time."
                ) from None
        user = None
        if options["user"]:
            user = selectors.user_find(username_or_id=options["user"])
            if user is None:
                raise CommandError(f"No user {options['user']!r}.")

        ids = selectors.image_ids_for_rerender(
            ids=options["ids"],
            dialogue_id=options["dialogue"],
            user=user,
            failed_only=options["failed_only"],
            since=since,
        )
        total = len(ids)
        if not total:
            self.stdout.write("No images match; nothing to do.")
            return
        if options["dry_run"]:
            self._dry_run(ids, options["batch_size"], model=options["model"], size=size)
            return

        ok = failed = 0
        done = 0
        started = time.monotonic()
        for chunk in batched(ids, options["batch_size"]):
            for image in selectors.images_by_ids(ids=chunk):
                done += 1
                try:
                    image = async_to_sync(services.image_rerender)(
                        image=image, model=options["model"], size=size
                    )
                except Exception as exc:  # one bad image must not end the run
                    logger.exception("re-rendering image %s failed", image.pk)
                    failed += 1
                    self.stderr.write(
                        f"[{done}/{total}] image {image.pk}: error: {exc}"
                    )
                    continue
                if image.error_code:
                    failed += 1
                    self.stderr.write(
                        f"[{done}/{total}] image {image.pk}: failed: {image.error_message}"
                    )
                else:
                    ok += 1
                    self.stdout.write(
                        f"[{done}/{total}] image {image.pk}: ok "
                        f"({image.model}, {image.width}x{image.height})"
                    )
        missing = total - done  # deleted while the run went on
        elapsed = time.monotonic() - started
        summary = (
            f"Re-rendered {ok} of {total} images in {elapsed:.1f}s; {failed} failed"
            + (f", {missing} vanished" if missing else "")
            + "."
        )
        if ok == 0:
            raise CommandError(summary)
        style = self.style.SUCCESS if not failed else self.style.WARNING
        self.stdout.write(style(summary))

    def _dry_run(
        self, ids: list[int], batch_size: int, *, model: str | None, size: str | None
    ) -> None:
        for chunk in batched(ids, batch_size):
            for image in selectors.images_by_ids(ids=chunk):
                self.stdout.write(
                    f"would re-render image {image.pk} [{image.status}] "
                    f"{model or image.model} {size or image.size}: {image.prompt[:60]!r}"
                )
        self.stdout.write(
            f"Dry run: {len(ids)} images would be re-rendered; nothing changed."
        )
