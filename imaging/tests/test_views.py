import io
import urllib.request

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.urls import reverse
from PIL import Image

from conversations.models import TranscriptView
from imaging import services
from tests.factories import UserFactory

from .conftest import StubGenerator

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def stored_image(image_message):
    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )
    return async_to_sync(services.image_render)(image=image, generator=StubGenerator())


def fetch_image_bytes(client, image) -> tuple[bytes, object]:
    """What a browser ends up with: the streamed file, or the presigned redirect's."""
    response = client.get(reverse("image-file", args=[image.pk]))
    if response.status_code == 302:
        with urllib.request.urlopen(response["Location"], timeout=10) as remote:
            return remote.read(), remote.headers
    assert response.status_code == 200
    return b"".join(response.streaming_content), response.headers


def test_owner_fetches_the_png(storage, client, user, stored_image):
    client.force_login(user)

    data, headers = fetch_image_bytes(client, stored_image)

    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert headers["Content-Type"] == "image/png"


def test_another_user_gets_404_like_a_missing_image(
    storage, client, other_user, stored_image
):
    client.force_login(other_user)

    foreign = client.get(reverse("image-file", args=[stored_image.pk]))
    missing = client.get(reverse("image-file", args=[stored_image.pk + 1000]))

    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content


def reviewer():
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        Permission.objects.get(
            codename="review_dialogue", content_type__app_label="conversations"
        )
    )
    return staff


def test_a_reviewer_may_fetch_any_image_and_each_look_is_audited(
    storage, client, stored_image
):
    staff = reviewer()
    client.force_login(staff)

    data, _ = fetch_image_bytes(client, stored_image)

    assert Image.open(io.BytesIO(data)).format == "PNG"
    (row,) = TranscriptView.objects.all()
    assert row.viewer == staff and row.dialogue == stored_image.message.dialogue
    assert f"[image {stored_image.pk}]" in row.dialogue_repr


def test_staff_without_the_review_permission_get_404_like_a_missing_image(
    local_storage, client, stored_image
):
    client.force_login(UserFactory(is_staff=True))

    foreign = client.get(reverse("image-file", args=[stored_image.pk]))
    missing = client.get(reverse("image-file", args=[stored_image.pk + 1000]))

    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    assert not TranscriptView.objects.exists()


def test_the_owner_looking_at_their_own_image_leaves_no_audit_row(
    local_storage, client, user, stored_image
):
    client.force_login(user)

    assert client.get(reverse("image-file", args=[stored_image.pk])).status_code == 200

    assert not TranscriptView.objects.exists()


def test_anonymous_visitors_are_sent_to_log_in(local_storage, client, stored_image):
    response = client.get(reverse("image-file", args=[stored_image.pk]))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_local_file_is_streamed_with_safe_headers(
    local_storage, client, user, stored_image
):
    client.force_login(user)

    response = client.get(reverse("image-file", args=[stored_image.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"].startswith("default-src 'none'")
    assert "private" in response["Cache-Control"]
    assert response["Content-Disposition"].startswith("inline")


def test_download_sets_an_attachment_with_a_clean_filename(
    local_storage, client, user, stored_image
):
    client.force_login(user)

    response = client.get(reverse("image-file", args=[stored_image.pk]) + "?download=1")

    assert response["Content-Disposition"] == (
        f'attachment; filename="image-{stored_image.pk}.png"'
    )


def test_a_known_etag_gets_not_modified(local_storage, client, user, stored_image):
    client.force_login(user)
    url = reverse("image-file", args=[stored_image.pk])
    etag = client.get(url)["ETag"]

    response = client.get(url, headers={"If-None-Match": etag})

    assert response.status_code == 304


def test_an_object_store_gets_a_short_lived_presigned_redirect(
    s3_storage, client, user, stored_image
):
    client.force_login(user)

    response = client.get(reverse("image-file", args=[stored_image.pk]) + "?download=1")

    assert response.status_code == 302
    location = response["Location"]
    assert location.startswith(s3_storage.endpoint)
    assert "X-Amz-Signature=" in location and "X-Amz-Expires=60" in location
    assert "no-store" in response["Cache-Control"]
    with urllib.request.urlopen(location, timeout=10) as remote:
        assert remote.headers["Content-Disposition"] == (
            f'attachment; filename="image-{stored_image.pk}.png"'
        )
        assert Image.open(io.BytesIO(remote.read())).format == "PNG"


def test_an_image_without_a_file_is_404(local_storage, client, user, image_message):
    image = services.image_create_pending(
        message=image_message, prompt="a fox", size=None
    )
    client.force_login(user)

    response = client.get(reverse("image-file", args=[image.pk]))

    assert response.status_code == 404


def test_an_unsafe_stored_content_type_is_only_offered_as_a_download(
    local_storage, client, user, stored_image
):
    type(stored_image).objects.filter(pk=stored_image.pk).update(
        content_type="text/html"
    )
    client.force_login(user)

    response = client.get(reverse("image-file", args=[stored_image.pk]))

    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")
