"""Time opening and switching branches of a large branched dialogue.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_bench \
        .venv/bin/python bench/tree_open.py [--turns 1800] [--every 5] [--repeat 20]

Migrates the database, builds one dialogue (user "bench-tree") of `turns` turns on its
shown branch with two more answers and one more wording (with its answer) at every
`every`-th turn, then times, as `dialogue.open` and `branch.switch` do it: reading the
dialogue's newest page of the shown branch with images and siblings, and switching to
an old branch and back. Prints the median and worst time and the queries of each.
Never point it at a database you care about.
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

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from conversations import selectors  # noqa: E402
from conversations.models import Dialogue, Message  # noqa: E402
from conversations.services import tree  # noqa: E402


def build(user, turns: int, every: int) -> Dialogue:
    Dialogue.objects.filter(owner=user).delete()
    dialogue = Dialogue.objects.create(owner=user, title="bench tree")
    parent = None
    for i in range(turns):
        q = Message.objects.create(
            dialogue=dialogue, user=user, role="user", content=f"q{i}", parent=parent
        )
        if i % every == 0:
            extra = [
                Message(dialogue=dialogue, user=user, role="assistant",
                        content=f"old a{i}.{k}", parent=q, replaced=True)
                for k in range(2)
            ]  # fmt: skip
            Message.objects.bulk_create(extra)
            alt = Message.objects.create(
                dialogue=dialogue, user=user, role="user", content=f"alt q{i}",
                parent=parent, replaced=True,
            )  # fmt: skip
            Message.objects.create(
                dialogue=dialogue, user=user, role="assistant", content=f"alt a{i}",
                parent=alt, replaced=True,
            )  # fmt: skip
        parent = Message.objects.create(
            dialogue=dialogue, user=user, role="assistant", content=f"a{i}", parent=q
        )
    return dialogue


def timed(func, repeat: int) -> tuple[float, float, int]:
    times, queries = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            func()
            times.append((time.perf_counter() - started) * 1000)
        queries = len(ctx)
    return statistics.median(times), max(times), queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1800)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench-tree")
    dialogue = build(user, args.turns, args.every)
    total = Message.objects.filter(dialogue=dialogue).count()
    old = Message.objects.get(dialogue=dialogue, content="alt q5")
    late_turn = (args.turns - 1) // args.every * args.every
    late = Message.objects.get(dialogue=dialogue, content=f"alt q{late_turn}")
    newest = Message.objects.filter(dialogue=dialogue, content=f"q{args.turns - 1}")
    back = newest.get()

    def open_page() -> None:
        found = selectors.dialogue_get_for_user(dialogue_id=dialogue.pk, user=user)
        selectors.message_page(dialogue=found)

    def switch_and_back(target: Message):
        def run() -> None:
            tree.branch_switch(user=user, dialogue_id=dialogue.pk, message_id=target.pk)
            tree.branch_switch(user=user, dialogue_id=dialogue.pk, message_id=back.pk)

        return run

    print(f"dialogue of {total} messages ({args.turns} turns shown)")
    print("| operation | median ms | worst ms | queries |")
    print("|---|---|---|---|")
    for name, func in (
        ("open (newest page, images, siblings)", open_page),
        (
            f"switch to turn {late_turn}'s other wording and back (2 switches)",
            switch_and_back(late),
        ),
        (
            "switch to turn 5's other wording and back (2 switches)",
            switch_and_back(old),
        ),
    ):
        median, worst, queries = timed(func, args.repeat)
        print(f"| {name} | {median:.1f} | {worst:.1f} | {queries} |")


if __name__ == "__main__":
    main()
