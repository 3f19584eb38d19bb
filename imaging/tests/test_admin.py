import pytest
from asgiref.sync import async_to_sync
from django.contrib.messages import get_messages
from django.urls import reverse

from imaging import services
from imaging.models import GeneratedImage
from tests.factories import MessageFactory

from .conftest import StubGenerator

pytestmark = pytest.mark.django_db(transaction=True)


def make_image(dialogue, prompt="a fox", *, failed=False):
    message = MessageFactory(dialogue=dialogue)
    image = services.image_create_pending(message=message, prompt=prompt, size=None)
    return async_to_sync(services.image_render)(
        image=image, generator=StubGenerator(fail_when=lambda p: failed)
    )


def test_changelist_shows_thumbnails_through_the_private_view(
    admin_client, dialogue, local_storage
):
    image = make_image(dialogue, "a red fox")
    failed = make_image(dialogue, "a blue boat", failed=True)

    response = admin_client.get(reverse("admin:imaging_generatedimage_changelist"))

    html = response.content.decode()
    assert response.status_code == 200
    assert f'src="{reverse("image-file", args=[image.pk])}"' in html
    assert f'src="{reverse("image-file", args=[failed.pk])}"' not in html
    assert "a red fox" in html and dialogue.owner.username in html


def test_changelist_filters_and_searches(admin_client, dialogue, local_storage):
    make_image(dialogue, "a red fox")
    make_image(dialogue, "a blue boat", failed=True)
    url = reverse("admin:imaging_generatedimage_changelist")

    by_status = admin_client.get(url, {"status__exact": "failed"}).content.decode()
    by_search = admin_client.get(url, {"q": "fox"}).content.decode()

    assert "a blue boat" in by_status and "a red fox" not in by_status
    assert "a red fox" in by_search and "a blue boat" not in by_search


def test_change_page_shows_a_preview_and_keeps_storage_fields_read_only(
    admin_client, dialogue, local_storage
):
    image = make_image(dialogue)

    html = admin_client.get(
        reverse("admin:imaging_generatedimage_change", args=[image.pk])
    ).content.decode()

    assert 'name="storage_key"' not in html
    assert image.storage_key in html
    assert f'src="{reverse("image-file", args=[image.pk])}"' in html


def test_rerender_action_reports_what_worked_and_what_did_not(
    admin_client, fake_openai, settings, dialogue, local_storage
):
    settings.IMAGE_MAX_RETRIES = 0
    good = make_image(dialogue, "a fox")
    bad = make_image(dialogue, "a fox [[policy]]")
    untouched = make_image(dialogue, "a boat")
    keys = {i.pk: i.storage_key for i in (good, bad, untouched)}

    response = admin_client.post(
        reverse("admin:imaging_generatedimage_changelist"),
        {"action": "rerender_selected", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )

    notes = [str(m) for m in get_messages(response.wsgi_request)]
    assert "Re-rendered 1 image." in notes
    assert "1 image could not be re-rendered; see its error." in notes
    rows = {i.pk: i for i in GeneratedImage.objects.all()}
    assert rows[good.pk].storage_key != keys[good.pk]
    assert rows[bad.pk].storage_key == keys[bad.pk]
    assert rows[bad.pk].error_code == "content_policy"
    assert rows[untouched.pk].storage_key == keys[untouched.pk]
    assert len(local_storage.keys()) == 3


def test_deleting_images_in_the_admin_removes_their_files(
    admin_client, dialogue, storage
):
    doomed, kept = make_image(dialogue), make_image(dialogue)

    admin_client.post(
        reverse("admin:imaging_generatedimage_changelist"),
        {"action": "delete_selected", "_selected_action": [doomed.pk], "post": "yes"},
    )
    admin_client.post(
        reverse("admin:imaging_generatedimage_delete", args=[kept.pk]), {"post": "yes"}
    )

    assert not GeneratedImage.objects.exists()
    assert storage.keys() == []
