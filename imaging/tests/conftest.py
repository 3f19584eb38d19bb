"""Imaging fixtures: storage on local media or on a real S3 server (moto), messages
to hang images on, and small generators for the protocol boundary."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from PIL import Image

from imaging.exceptions import ImageGenerationError
from imaging.generators import GeneratedPicture, picture_from_bytes
from imaging.testing import Storage, start_moto, use_local_storage, use_s3_storage
from tests.factories import MessageFactory


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The factories hash a password per user; PBKDF2 makes that the slowest step.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with start_moto() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def storage(request, settings, tmp_path) -> Storage:
    """Runs the test once on local media and once on a real S3 server (moto)."""
    if request.param == "local":
        return use_local_storage(settings, tmp_path / "media")
    return use_s3_storage(settings, request.getfixturevalue("moto_endpoint"))


@pytest.fixture
def local_storage(settings, tmp_path) -> Storage:
    return use_local_storage(settings, tmp_path / "media")


@pytest.fixture
def s3_storage(settings, moto_endpoint) -> Storage:
    return use_s3_storage(settings, moto_endpoint)


@pytest.fixture
def demo_mode(settings) -> None:
    """No provider configured: get_image_generator() returns the offline demo."""
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""


@pytest.fixture
def image_message(dialogue):
    return MessageFactory(dialogue=dialogue, content="/image a red fox in the snow")


def png_bytes(width: int = 32, height: int = 24, color: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


class StubGenerator:
    """An ImageGenerator that answers from a script: a picture, or an error."""

    def __init__(
        self,
        fail_when: Callable[[str], bool] | None = None,
        error: ImageGenerationError | None = None,
    ) -> None:
        self.fail_when = fail_when or (lambda prompt: False)
        self.error = error or ImageGenerationError(
            "content_policy",
            "The image was refused by the provider's safety system: no.",
        )
        self.calls: list[dict[str, str]] = []

    async def generate(self, *, prompt: str, size: str, model: str) -> GeneratedPicture:
        self.calls.append({"prompt": prompt, "size": size, "model": model})
        if self.fail_when(prompt):
            raise self.error
        width, height = (int(x) // 32 for x in size.split("x"))
        return picture_from_bytes(
            png_bytes(width, height), revised_prompt=f"revised {prompt}"
        )
