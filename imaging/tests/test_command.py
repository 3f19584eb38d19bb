import io
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command
from django.utils import timezone

from conftest import BASE_DIR, current_database_url, fake_openai_env
from imaging import services
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory, MessageFactory

from .conftest import StubGenerator

pytestmark = pytest.mark.django_db(transaction=True)


def make_image(dialogue, prompt="a fox", *, failed=False):
    message = MessageFactory(dialogue=dialogue)
    image = services.image_create_pending(message=message, prompt=prompt, size=None)
    return async_to_sync(services.image_render)(
        image=image, generator=StubGenerator(fail_when=lambda p: failed)
    )


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("rerender_images", *map(str, args), stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def snapshot():
    return {
        i.pk: (i.storage_key, i.status, i.updated_at)
        for i in GeneratedImage.objects.order_by("pk")
    }


def changed(before, after):
    return sorted(pk for pk in before if before[pk] != after[pk])


@pytest.fixture
def images(user, other_user):
    mine, mine_too = DialogueFactory(owner=user), DialogueFactory(owner=user)
    theirs = DialogueFactory(owner=other_user)
    return {
        "mine": make_image(mine),
        "mine_failed": make_image(mine, failed=True),
        "mine_too": make_image(mine_too),
        "theirs": make_image(theirs),
        "theirs_failed": make_image(theirs, failed=True),
    }


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (lambda im, u: ["--ids", im["mine"].pk, im["theirs"].pk], ["mine", "theirs"]),
        (
            lambda im, u: ["--dialogue", im["mine"].message.dialogue_id],
            ["mine", "mine_failed"],
        ),
        (lambda im, u: ["--user", u.username], ["mine", "mine_failed", "mine_too"]),
        (lambda im, u: ["--user", u.pk], ["mine", "mine_failed", "mine_too"]),
        (lambda im, u: ["--failed-only"], ["mine_failed", "theirs_failed"]),
        (lambda im, u: ["--failed-only", "--user", u.username], ["mine_failed"]),
    ],
    ids=["ids", "dialogue", "user-name", "user-id", "failed-only", "failed-and-user"],
)
def test_rerender_touches_exactly_the_selected_images(
    local_storage, demo_mode, images, user, selector, expected
):
    before = snapshot()

    out, err = run(*selector(images, user))

    after = snapshot()
    assert changed(before, after) == sorted(images[name].pk for name in expected)
    for name in expected:
        assert after[images[name].pk][1] == "complete"
        assert after[images[name].pk][0] != before[images[name].pk][0]  # a new file
    assert f"Re-rendered {len(expected)} of {len(expected)} images" in out
    assert err == ""
    # old files are gone, new ones present: exactly one file per image with a key
    assert sorted(local_storage.keys()) == sorted(k for k, _, _ in after.values() if k)


def test_since_selects_images_created_from_that_date(
    local_storage, demo_mode, dialogue
):
    old, new = make_image(dialogue), make_image(dialogue)
    GeneratedImage.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    since = (timezone.now() - timedelta(days=2)).date().isoformat()
    before = snapshot()

    run("--since", since)

    assert changed(before, snapshot()) == [new.pk]


def test_dry_run_changes_nothing(storage, demo_mode, images):
    before, files = snapshot(), storage.keys()

    out, _ = run("--dry-run")

    assert snapshot() == before
    assert storage.keys() == files
    assert "Dry run: 5 images would be re-rendered; nothing changed." in out
    assert f"would re-render image {images['mine'].pk}" in out


def test_model_and_size_overrides_reach_the_provider(
    local_storage, fake_openai, dialogue
):
    image = make_image(dialogue)

    run("--ids", image.pk, "--model", "painter-9", "--size", "1536x1024")

    body = fake_openai.requests[-1]["body"]
    assert (body["model"], body["size"]) == ("painter-9", "1536x1024")
    image.refresh_from_db()
    assert (image.model, image.size, image.width, image.height) == (
        "painter-9",
        "1536x1024",
        384,
        256,
    )


def test_one_failing_image_does_not_stop_the_run(
    storage, fake_openai, settings, dialogue
):
    settings.IMAGE_MAX_RETRIES = 0
    first = make_image(dialogue, "a fox")
    refused = make_image(dialogue, "something [[policy]]")
    last = make_image(dialogue, "a boat")
    before = snapshot()

    out, err = run("--batch-size", 1)

    after = snapshot()
    new_files = [pk for pk in before if before[pk][0] != after[pk][0]]
    assert new_files == [first.pk, last.pk]
    refused.refresh_from_db()
    # the old picture stays and the error is on record
    assert (refused.status, refused.storage_key) == ("complete", before[refused.pk][0])
    assert refused.error_code == "content_policy"
    assert f"image {refused.pk}: failed: The image was refused" in err
    assert "[3/3]" in out
    assert "Re-rendered 2 of 3 images" in out and "1 failed" in out
    assert len(storage.keys()) == 3


def test_nothing_succeeding_is_an_error(local_storage, fake_openai, settings, dialogue):
    settings.IMAGE_MAX_RETRIES = 0
    image = make_image(dialogue, "x [[500]]")

    with pytest.raises(CommandError, match="Re-rendered 0 of 1 images"):
        run("--ids", image.pk)


def test_nothing_selected_is_not_an_error(local_storage, demo_mode, dialogue):
    make_image(dialogue)

    out, _ = run("--failed-only")

    assert "No images match" in out


def test_images_being_rendered_right_now_are_left_alone(
    local_storage, demo_mode, dialogue
):
    fresh = services.image_create_pending(
        message=MessageFactory(dialogue=dialogue), prompt="a fox", size=None
    )
    stale = services.image_create_pending(
        message=MessageFactory(dialogue=dialogue), prompt="a boat", size=None
    )
    GeneratedImage.objects.filter(pk=stale.pk).update(
        updated_at=timezone.now() - timedelta(hours=1)
    )

    run()

    fresh.refresh_from_db()
    stale.refresh_from_db()
    assert (fresh.status, stale.status) == ("pending", "complete")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "nobody-by-that-name"], "No user"),
        (["--size", "3x3"], "Unsupported image size"),
        (["--since", "last tuesday"], "not an ISO date"),
        (["--batch-size", "0"], "at least 1"),
    ],
)
def test_bad_options_are_refused_before_any_work(
    local_storage, demo_mode, dialogue, args, message
):
    make_image(dialogue)
    before = snapshot()

    with pytest.raises(CommandError, match=message):
        run(*args)
    assert snapshot() == before


def test_exit_status_of_the_real_command(storage, fake_openai, dialogue):
    # A separate process on the test database, its storage configured from the
    # environment as in production: the exit code a cron job would see.
    good, bad = make_image(dialogue, "a fox"), make_image(dialogue, "x [[500]]")
    env = {
        **os.environ,
        **fake_openai_env(fake_openai),
        **storage.env(),
        "DATABASE_URL": current_database_url(),
        "IMAGE_MAX_RETRIES": "0",
    }

    def command(*args):
        return subprocess.run(
            [sys.executable, "manage.py", "rerender_images", *map(str, args)],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    mixed = command("--ids", good.pk, bad.pk)
    all_failed = command("--ids", bad.pk)

    assert mixed.returncode == 0, mixed.stderr
    assert "Re-rendered 1 of 2 images" in mixed.stdout
    good.refresh_from_db()
    assert sorted(storage.keys()) == sorted([good.storage_key, bad.storage_key])
    assert good.storage_key not in (bad.storage_key, "")
    assert all_failed.returncode == 1, all_failed.stderr
    assert "Re-rendered 0 of 1 images" in all_failed.stderr, all_failed.stderr
