"""Test helpers for image storage: local media or a real S3 server (moto).

Used by imaging/tests and available to any test that needs images in an object
store, including end-to-end tests whose daphne subprocess reads its settings from
the environment (`Storage.env()`):

    storage = use_s3_storage(settings, endpoint)   # endpoint from start_moto()
    server = daphne_factory(storage.env())
    ...
    assert storage.keys() == [image.storage_key]
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from django.conf import settings as django_settings

S3_KEY, S3_SECRET, S3_REGION = "testing-key", "testing-secret", "us-east-1"
URL_EXPIRE_SECONDS = 60


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


@contextmanager
def start_moto() -> Iterator[str]:
    """A moto S3 server on a free local port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

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

    def client(self) -> Any:
        """A boto3 S3 client on the test server (S3 only)."""
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

    def env(self) -> dict[str, str]:
        """Environment giving a subprocess (daphne, manage.py) this same storage."""
        if self.kind == "local":
            return {"MEDIA_ROOT": str(self.media_root)}
        return {
            "AWS_STORAGE_BUCKET_NAME": self.bucket,
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_S3_REGION_NAME": S3_REGION,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "IMAGE_URL_EXPIRE_SECONDS": str(URL_EXPIRE_SECONDS),
        }


def use_s3_storage(settings: Any, endpoint: str) -> Storage:
    """Point default_storage (via pytest-django's `settings`) at a fresh bucket."""
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
                "querystring_expire": URL_EXPIRE_SECONDS,
                "file_overwrite": False,
                "client_config": s3_client_config(),
            },
        },
    }
    return storage


def use_local_storage(settings: Any, media_root: Path) -> Storage:
    settings.MEDIA_ROOT = media_root
    settings.STORAGES = {
        **django_settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    return Storage("local", media_root=media_root)
