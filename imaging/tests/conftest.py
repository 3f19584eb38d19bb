"""Imaging fixtures: storage on local media or on a real S3 server (moto), messages
to hang images on, and small generators for the protocol boundary."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from django.conf import settings as django_settings
from moto.server import ThreadedMotoServer
from PIL import Image

from imaging.exceptions import ImageGenerationError
from imaging.generators import GeneratedPicture, picture_from_bytes
from tests.factories import MessageFactory

S3_KEY, S3_SECRET, S3_REGION = "testing-key", "testing-secret", "us-east-1"


def s3_client_config() -> Config:
    """The botocore config settings.py builds for S3/OSS (see its storage section)."""
    return Config(
        s3={"addressing_style": "virtual"},
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=5.0,
        read_timeout=30.0,
        retries={"max_attempts": 3, "mode": "standard"},
    )


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # The factories hash a password per user; PBKDF2 makes that the slowest step.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class Storage:
    """What a test needs to know about the storage in use."""

    def __init__(
        self,
        kind: str,
        *,
        media_root: Path | None = None,
        bucket: str = "",
        endpoint: str = "",
    ) -> None:
        self.kind = kind
        self.media_root = media_root
        self.bucket = bucket
        self.endpoint = endpoint

    def client(self):  # boto3 S3 client, S3 only
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            config=s3_client_config(),
        )

    def keys(self) -> list[str]:
        """Every file currently stored, as storage keys."""
        if self.kind == "local":
            root = self.media_root
            if root is None or not root.exists():
                return []
            return sorted(
                str(p.relative_to(root)).replace(os.sep, "/")
                for p in root.rglob("*")
                if p.is_file()
            )
        listing = self.client().list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def read(self, key: str) -> bytes:
        if self.kind == "local":
            assert self.media_root is not None
            return (self.media_root / key).read_bytes()
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()


def use_s3_storage(settings, endpoint: str) -> Storage:
    bucket = f"img-{uuid.uuid4().hex[:20]}"
    storage = Storage("s3", bucket=bucket, endpoint=endpoint)
    storage.client().create_bucket(Bucket=bucket)
    # Assigning STORAGES fires setting_changed, which resets default_storage
    # (django.test.signals.storages_changed).
    settings.STORAGES = {
        **django_settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": endpoint,
                "region_name": S3_REGION,
                "access_key": S3_KEY,
                "secret_key": S3_SECRET,
                "default_acl": None,
                "querystring_auth": True,
                "querystring_expire": 60,
                "file_overwrite": False,
                "client_config": s3_client_config(),
            },
        },
    }
    return storage


def use_local_storage(settings, media_root: Path) -> Storage:
    settings.MEDIA_ROOT = media_root
    settings.STORAGES = {
        **django_settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    return Storage("local", media_root=media_root)


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
