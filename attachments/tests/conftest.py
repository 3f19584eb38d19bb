"""Attachment fixtures: storage on local media or a real S3 server (moto), and a
logged-in client that uploads through the real multipart view."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

# Storage on local media or a real S3 server (moto), shared with the imaging tests.
from imaging.tests.conftest import (  # noqa: F401
    _fast_password_hashing,
    local_storage,
    moto_endpoint,
    s3_storage,
    storage,
)


def upload(client: Client, data: bytes, name: str):
    """POST one file to the upload view as a browser form would."""
    return client.post(reverse("attachments"), {"file": SimpleUploadedFile(name, data)})


@pytest.fixture
def owner_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client
