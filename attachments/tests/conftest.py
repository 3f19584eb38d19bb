"""Attachment fixtures: storage on local media or a real S3 server (moto), and a
logged-in client that uploads through the real multipart view."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.urls import reverse

# Storage on local media or a real S3 server (moto), shared with the imaging tests.
from imaging.tests.conftest import (  # noqa: F401
    _fast_password_hashing,
    local_storage,
    moto_endpoint,
    s3_storage,
    storage,
)


def upload(client: Client, data: bytes, name: str, *, method: str = "put", **extra):
    """Send one file to the upload view as the page does (multipart PUT)."""
    form = {"file": SimpleUploadedFile(name, data)}
    if method == "post":
        return client.post(reverse("attachments"), form, **extra)
    return client.put(
        reverse("attachments"),
        encode_multipart(BOUNDARY, form),
        content_type=MULTIPART_CONTENT,
        **extra,
    )


@pytest.fixture
def owner_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client
