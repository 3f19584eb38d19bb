"""Time the staff admin pages against a database holding 100,000 messages.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_bench \
        .venv/bin/python bench/admin_changelist.py [--messages 100000] [--repeat 10]

Migrates the database, fills it once (users, dialogues, messages, flags, usage; rows
are recognised by the "bench-" usernames and reused on the next run), then requests
each page through Django's test client as a superuser and prints the median and worst
time and the number of queries per page. Never point it at a database you care about.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from conversations.models import Dialogue, Flag, Message, UsageDaily  # noqa: E402

PER_DIALOGUE = 10
USERS = 500
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "reviewers",
    "read",
    "transcripts",
]


def populate(n_messages: int) -> None:
    User = get_user_model()
    if (
        Message.objects.filter(user__username__startswith="bench-").count()
        >= n_messages
    ):
        return
    print(f"populating {n_messages} messages...", flush=True)
    t0 = time.perf_counter()
    users = User.objects.bulk_create(
        [User(username=f"bench-{i}-{time.time_ns()}") for i in range(USERS)]
    )
    n_dialogues = n_messages // PER_DIALOGUE
    dialogues = Dialogue.objects.bulk_create(
        [
            Dialogue(
                owner=users[i % USERS], title=f"bench dialogue {i}", model=f"m{i % 4}"
            )
            for i in range(n_dialogues)
        ],
        batch_size=5000,
    )
    batch: list[Message] = []
    for d in dialogues:
        for k in range(PER_DIALOGUE):
            assistant = k % 2 == 1
            batch.append(
                Message(
                    dialogue=d,
                    user_id=d.owner_id,
                    role="assistant" if assistant else "user",
                    content=" ".join(
                        WORDS[(d.pk + k + j) % len(WORDS)] for j in range(40)
                    ),
                    status="failed"
                    if (assistant and d.pk % 50 == 0 and k == 9)
                    else "complete",
                    prompt_tokens=300 if assistant else None,
                    completion_tokens=120 if assistant else None,
                )
            )
        if len(batch) >= 10000:
            Message.objects.bulk_create(batch)
            batch = []
    Message.objects.bulk_create(batch)
    Flag.objects.bulk_create(
        [Flag(dialogue=d, source="user", reason="bench") for d in dialogues[::100]]
    )
    # a rare word for the text search: 5 messages in 5 dialogues
    rare = Message.objects.filter(user__username__startswith="bench-").order_by("id")
    for m in rare[5000:5050:10]:
        Message.objects.filter(pk=m.pk).update(content=m.content + " zanzibar")
    today = timezone.now().date()
    UsageDaily.objects.bulk_create(
        [
            UsageDaily(user=u, day=today - timezone.timedelta(days=k), messages=5)
            for u in users
            for k in range(14)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    print(f"populated in {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--messages", type=int, default=100_000, help="messages to hold"
    )
    parser.add_argument("--repeat", type=int, default=10, help="requests per page")
    args = parser.parse_args()
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        sys.exit("point DATABASE_URL at a scratch PostgreSQL database")
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        },
    }
    call_command("migrate", verbosity=0)
    populate(args.messages)
    User = get_user_model()
    admin, _ = User.objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(admin)
    dialogue = Dialogue.objects.filter(owner__username__startswith="bench-").first()
    owner = dialogue.owner.username
    changelist = reverse("admin:conversations_dialogue_changelist")
    pages = [
        ("dialogues", changelist),
        ("dialogues, sorted by messages", changelist + "?o=5"),
        ("dialogues, sorted by tokens", changelist + "?o=6"),
        ("dialogues, owner filter", f"{changelist}?owner={owner}"),
        ("dialogues, failed replies", changelist + "?status=problem"),
        ("dialogues, search title", changelist + "?q=dialogue+123"),
        ("dialogues, search text (rare word)", changelist + "?q=zanzibar"),
        ("dialogues, search text (common)", changelist + "?q=reviewers+lazy"),
        (
            "transcript (10 messages)",
            reverse("admin:conversations_dialogue_change", args=[dialogue.pk]),
        ),
        ("messages", reverse("admin:conversations_message_changelist")),
        ("review queue", reverse("admin:conversations_flag_changelist")),
        ("usage", reverse("admin:conversations_usagedaily_changelist")),
        ("users", reverse("admin:auth_user_changelist")),
    ]
    print(
        f"{Message.objects.count()} messages, {Dialogue.objects.count()} dialogues, "
        f"{User.objects.count()} users"
    )
    print(f"{'page':34} {'median ms':>9} {'max ms':>8} {'queries':>8} {'sql ms':>7}")
    for name, url in pages:
        client.get(url)  # warm up
        times = []
        for _ in range(args.repeat):
            with CaptureQueriesContext(connection) as ctx:
                t0 = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        print(
            f"{name:34} {statistics.median(times):9.1f} {max(times):8.1f} "
            f"{len(ctx.captured_queries):8d} "
            f"{sum(float(q['time']) for q in ctx.captured_queries) * 1000:7.1f}"
        )


if __name__ == "__main__":
    main()
