import io

import pytest
from asgiref.sync import async_to_sync
from PIL import Image

from conversations.exceptions import BadRequest, TooLong
from imaging import services
from imaging.exceptions import ImageGenerationError
from imaging.models import GeneratedImage
from tests.factories import DialogueFactory, MessageFactory

from .conftest import StubGenerator, png_bytes

# The services reach the database through channels' database_sync_to_async, which
# closes a connection inside a transaction: so no test-wrapping transaction.
pytestmark = pytest.mark.django_db(transaction=True)


def render(image, generator=None):
    return async_to_sync(services.image_render)(image=image, generator=generator)


def rerender(image, generator=None, **kwargs):
    return async_to_sync(services.image_rerender)(
        image=image, generator=generator, **kwargs
    )


# --- creating -------------------------------------------------------------------------


def test_create_pending_defaults_to_the_first_configured_size_and_model(
    settings, image_message
):
    settings.IMAGE_SIZES = ["512x512", "1024x1024"]
    settings.IMAGE_MODEL = "painter-2"
    settings.OPENAI_API_KEY = "sk-test"  # a provider draws, not the offline demo

    image = services.image_create_pending(
        message=image_message, prompt="  a fox ", size=None
    )

    assert (image.prompt, image.size, image.model) == ("a fox", "512x512", "painter-2")
    assert image.status == GeneratedImage.Status.PENDING
    assert image.storage_key == ""


def test_pictures_the_offline_demo_draws_are_recorded_as_its_own(
    settings, image_message
):
    # given no provider: the demo generator draws, whatever IMAGE_MODEL says
    settings.OPENAI_API_KEY = settings.OPENAI_BASE_URL = ""
    settings.IMAGE_MODEL = "gpt-image-1"

    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )

    assert image.model == "offline-demo"
    # and once a provider is set up, re-rendering it uses the provider's model
    settings.OPENAI_API_KEY = "sk-test"
    assert services._stored_model(image) == "gpt-image-1"


def test_create_pending_refuses_a_size_that_is_not_configured(settings, image_message):
    settings.IMAGE_SIZES = ["1024x1024"]

    with pytest.raises(BadRequest, match="1024x1024"):
        services.image_create_pending(
            message=image_message, prompt="a fox", size="4096x4096"
        )
    assert not GeneratedImage.objects.exists()


def test_create_pending_refuses_empty_and_overlong_prompts(settings, image_message):
    settings.IMAGE_PROMPT_MAX_CHARS = 10

    with pytest.raises(BadRequest):
        services.image_create_pending(message=image_message, prompt="   ", size=None)
    with pytest.raises(TooLong):
        services.image_create_pending(message=image_message, prompt="x" * 11, size=None)
    assert not GeneratedImage.objects.exists()


# --- rendering --------------------------------------------------------------------------


def test_render_stores_a_real_png_and_only_its_key(storage, demo_mode, image_message):
    image = services.image_create_pending(
        message=image_message, prompt="a red fox in the snow", size="1024x1024"
    )

    image = render(image)  # the offline demo generator, chosen from the settings

    row = GeneratedImage.objects.get(pk=image.pk)
    assert row.status == GeneratedImage.Status.COMPLETE
    assert (row.width, row.height, row.content_type) == (1024, 1024, "image/png")
    assert row.storage_key.startswith("images/") and row.storage_key.endswith(".png")
    assert "fox" not in row.storage_key  # generated, never from the prompt
    assert storage.keys() == [row.storage_key]
    with Image.open(io.BytesIO(storage.read(row.storage_key))) as img:
        assert (img.format, img.size) == ("PNG", (1024, 1024))
    # Only the key is kept: no base64, no provider URL anywhere in the row.
    stored_text = " ".join(
        str(v) for v in GeneratedImage.objects.values().get(pk=image.pk).values()
    )
    assert (
        "base64" not in stored_text
        and "http" not in stored_text
        and len(stored_text) < 1000
    )


def test_render_through_the_provider_stores_its_png(
    storage, fake_openai, image_message
):
    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )

    image = render(image)

    row = GeneratedImage.objects.get(pk=image.pk)
    assert (row.status, row.model, row.width, row.height) == (
        "complete",
        "fake-image",
        256,
        256,
    )
    assert row.revised_prompt == "a fox (as imagined by the fake)"
    assert storage.keys() == [row.storage_key]
    assert Image.open(io.BytesIO(storage.read(row.storage_key))).format == "PNG"


@pytest.mark.parametrize(
    ("prompt", "code", "words"),
    [
        (
            "a fox [[policy]]",
            "content_policy",
            "refused by the provider's safety system: ",
        ),
        ("a fox [[500]]", "upstream_error", "internal error (HTTP 500)"),
    ],
)
def test_provider_refusal_and_500_fail_the_image_and_store_nothing(
    storage, fake_openai, settings, image_message, prompt, code, words
):
    settings.IMAGE_MAX_RETRIES = 0
    image = services.image_create_pending(
        message=image_message, prompt=prompt, size=None
    )

    image = render(image)

    row = GeneratedImage.objects.get(pk=image.pk)
    assert (row.status, row.error_code) == ("failed", code)
    assert words in row.error_message
    assert row.storage_key == ""
    assert storage.keys() == []


def test_render_failure_records_a_readable_reason_and_stores_nothing(
    storage, image_message
):
    image = services.image_create_pending(
        message=image_message, prompt="forbidden", size=None
    )

    image = render(image, StubGenerator(fail_when=lambda p: True))

    row = GeneratedImage.objects.get(pk=image.pk)
    assert row.status == image.status == GeneratedImage.Status.FAILED
    assert row.error_code == "content_policy"
    assert row.error_message.startswith(
        "The image was refused by the provider's safety"
    )
    assert row.storage_key == ""
    assert storage.keys() == []


def test_render_turns_an_unexpected_generator_crash_into_a_failed_image(
    local_storage, image_message
):
    class Broken:
        async def generate(self, *, prompt, size, model):
            raise RuntimeError("boom")

    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )

    image = render(image, Broken())

    assert image.status == GeneratedImage.Status.FAILED
    assert image.error_code == "internal"
    assert "boom" not in image.error_message
    assert local_storage.keys() == []


def test_render_fails_cleanly_when_the_bucket_is_unusable(s3_storage, image_message):
    s3_storage.client().delete_bucket(Bucket=s3_storage.bucket)
    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )

    image = render(image, StubGenerator())

    assert image.status == GeneratedImage.Status.FAILED
    assert image.error_code == "storage_error"
    assert GeneratedImage.objects.get(pk=image.pk).storage_key == ""


def test_render_of_an_image_deleted_meanwhile_leaves_no_file(
    local_storage, image_message
):
    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )
    GeneratedImage.objects.filter(pk=image.pk).delete()

    image = render(image, StubGenerator())

    assert image.status == GeneratedImage.Status.FAILED
    assert local_storage.keys() == []


def test_uploads_to_s3_are_not_aws_chunked(s3_storage):
    # OSS rejects aws-chunked uploads (docs/stack-notes.md); the client config must not
    # produce them. Watch the real request headers of an upload.
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    seen: list[dict] = []
    client = default_storage.connection.meta.client  # per thread: save on this one
    client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **kw: seen.append(dict(request.headers)),
    )

    key = default_storage.save("images/probe.png", ContentFile(png_bytes()))

    assert s3_storage.keys() == [key]
    assert seen, "no PutObject was sent"
    headers = {k.lower(): str(v) for k, v in seen[0].items()}
    assert "aws-chunked" not in headers.get("content-encoding", "")
    assert not headers.get("x-amz-content-sha256", "").startswith("STREAMING")
    assert "x-amz-trailer" not in headers


# --- re-rendering ------------------------------------------------------------------------


def test_rerender_switches_to_the_new_file_and_removes_the_old_one(
    storage, image_message
):
    image = render(
        services.image_create_pending(message=image_message, prompt="a fox", size=None),
        StubGenerator(),
    )
    old_key = image.storage_key

    image = rerender(image, StubGenerator(), model="painter-3", size="1536x1024")

    row = GeneratedImage.objects.get(pk=image.pk)
    assert row.storage_key != old_key
    assert (row.model, row.size, row.width, row.height) == (
        "painter-3",
        "1536x1024",
        48,
        32,
    )
    assert row.revised_prompt == "revised a fox"
    assert storage.keys() == [row.storage_key]


def test_failed_rerender_keeps_the_old_picture_and_records_why(storage, image_message):
    image = render(
        services.image_create_pending(message=image_message, prompt="a fox", size=None),
        StubGenerator(),
    )
    old_key = image.storage_key
    failing = StubGenerator(
        fail_when=lambda p: True,
        error=ImageGenerationError("rate_limited", "The image provider is busy."),
    )

    image = rerender(image, failing)

    row = GeneratedImage.objects.get(pk=image.pk)
    assert row.status == GeneratedImage.Status.COMPLETE  # the old picture still shows
    assert row.storage_key == old_key
    assert (row.error_code, row.error_message) == (
        "rate_limited",
        "The image provider is busy.",
    )
    assert storage.keys() == [old_key]

    # and a later successful re-render clears the error
    image = rerender(image, StubGenerator())
    row.refresh_from_db()
    assert (row.status, row.error_code, row.error_message) == ("complete", "", "")


def test_rerender_of_a_failed_image_completes_it(local_storage, image_message):
    image = render(
        services.image_create_pending(message=image_message, prompt="a fox", size=None),
        StubGenerator(fail_when=lambda p: True),
    )
    assert image.status == "failed"

    image = rerender(image, StubGenerator())

    row = GeneratedImage.objects.get(pk=image.pk)
    assert (row.status, row.error_code) == ("complete", "")
    assert local_storage.keys() == [row.storage_key]


def test_rerender_refuses_an_unconfigured_size(image_message):
    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )

    with pytest.raises(BadRequest):
        rerender(image, StubGenerator(), size="3x3")


# --- deleting ----------------------------------------------------------------------------


def test_deleting_a_dialogue_removes_its_image_files_after_commit(storage, user):
    from django.db import transaction

    doomed, kept = DialogueFactory(owner=user), DialogueFactory(owner=user)
    for dialogue in (doomed, doomed, kept):
        message = MessageFactory(dialogue=dialogue)
        render(
            services.image_create_pending(message=message, prompt="a fox", size=None),
            StubGenerator(),
        )
    kept_key = GeneratedImage.objects.get(message__dialogue=kept).storage_key

    with transaction.atomic():
        scheduled = services.images_delete_for_dialogue(dialogue=doomed)
        doomed.delete()
        assert len(storage.keys()) == 3  # nothing removed before the commit

    assert scheduled == 2
    assert storage.keys() == [kept_key]


def test_a_rolled_back_dialogue_delete_keeps_its_files(
    local_storage, dialogue, image_message
):
    from django.db import transaction

    render(
        services.image_create_pending(message=image_message, prompt="a fox", size=None),
        StubGenerator(),
    )

    with pytest.raises(RuntimeError), transaction.atomic():
        services.images_delete_for_dialogue(dialogue=dialogue)
        dialogue.delete()
        raise RuntimeError("rollback")

    assert len(local_storage.keys()) == 1
    assert GeneratedImage.objects.count() == 1
