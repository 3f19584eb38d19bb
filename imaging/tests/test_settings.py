"""The storage settings, read in a fresh process from a given environment."""

import json
import os
import subprocess
import sys

from conftest import BASE_DIR

PROBE = r"""
import json
import django
django.setup()
from django.conf import settings
from django.core.files.storage import storages

options = settings.STORAGES["default"].get("OPTIONS", {})
config = options.get("client_config")
result = {
    "backend": settings.STORAGES["default"]["BACKEND"],
    "options": {k: v for k, v in options.items() if k != "client_config"},
}
result["storage_class"] = type(storages["default"]).__name__
if config is not None:
    result["config"] = {
        "s3": config.s3,
        "signature_version": config.signature_version,
        "request_checksum_calculation": config.request_checksum_calculation,
        "response_checksum_validation": config.response_checksum_validation,
    }
    # Signing a URL needs no network: it shows the addressing and signature really used.
    result["url"] = storages["default"].url("images/2026/01/abc.png")
print(json.dumps(result))
"""

STORAGE_VARS = (
    "OSS_BUCKET",
    "OSS_ENDPOINT",
    "OSS_REGION",
    "OSS_ACCESS_KEY_ID",
    "OSS_ACCESS_KEY_SECRET",
    "AWS_STORAGE_BUCKET_NAME",
    "AWS_S3_ENDPOINT_URL",
    "AWS_S3_REGION_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_S3_ADDRESSING_STYLE",
)


def settings_with(**env_vars: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STORAGE_VARS}
    env.update({"DJANGO_SETTINGS_MODULE": "chatsite.settings", **env_vars})
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_oss_variables_configure_the_s3_backend_for_aliyun():
    result = settings_with(
        OSS_BUCKET="chat-images",
        OSS_REGION="cn-hangzhou",
        OSS_ACCESS_KEY_ID="LTAIexample",
        OSS_ACCESS_KEY_SECRET="secret-example",
    )

    assert result["backend"] == "storages.backends.s3.S3Storage"
    assert result["storage_class"] == "S3Storage"
    options = result["options"]
    assert options["bucket_name"] == "chat-images"
    assert options["endpoint_url"] == "https://s3.oss-cn-hangzhou.aliyuncs.com"
    assert options["region_name"] == "cn-hangzhou"
    assert (options["access_key"], options["secret_key"]) == (
        "LTAIexample",
        "secret-example",
    )
    assert options["default_acl"] is None and options["querystring_auth"] is True
    assert result["config"] == {
        "s3": {"addressing_style": "virtual"},
        "signature_version": "s3v4",
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    # Virtual-hosted, SigV4-signed, short-lived.
    url = result["url"]
    assert url.startswith(
        "https://chat-images.s3.oss-cn-hangzhou.aliyuncs.com/images/2026/01/abc.png?"
    )
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert "X-Amz-Expires=300" in url


def test_an_explicit_oss_endpoint_and_the_consoles_region_spelling_are_accepted():
    result = settings_with(
        OSS_BUCKET="b1",
        OSS_REGION="oss-cn-shanghai",
        OSS_ENDPOINT="s3.oss-cn-shanghai-internal.aliyuncs.com",
        OSS_ACCESS_KEY_ID="k",
        OSS_ACCESS_KEY_SECRET="s",
    )

    assert (
        result["options"]["endpoint_url"]
        == "https://s3.oss-cn-shanghai-internal.aliyuncs.com"
    )
    assert result["options"]["region_name"] == "cn-shanghai"


def test_plain_aws_variables_configure_any_s3_compatible_store():
    result = settings_with(
        AWS_STORAGE_BUCKET_NAME="media",
        AWS_S3_ENDPOINT_URL="http://minio.local:9000",
        AWS_S3_REGION_NAME="eu-west-1",
        AWS_ACCESS_KEY_ID="a",
        AWS_SECRET_ACCESS_KEY="b",
        AWS_S3_ADDRESSING_STYLE="path",
    )

    assert result["options"]["endpoint_url"] == "http://minio.local:9000"
    assert result["config"]["s3"] == {"addressing_style": "path"}
    assert result["url"].startswith("http://minio.local:9000/media/images/")


def test_without_a_bucket_images_go_to_local_media():
    result = settings_with()

    assert result["backend"] == "django.core.files.storage.FileSystemStorage"
    assert result["storage_class"] == "FileSystemStorage"


def test_empty_aws_lines_from_the_example_file_do_not_hide_the_oss_ones():
    result = settings_with(
        OSS_BUCKET="chat-images",
        OSS_REGION="cn-beijing",
        OSS_ACCESS_KEY_ID="k",
        OSS_ACCESS_KEY_SECRET="s",
        AWS_STORAGE_BUCKET_NAME="",
        AWS_S3_ENDPOINT_URL="",
        AWS_S3_REGION_NAME="",
        AWS_ACCESS_KEY_ID="",
        AWS_SECRET_ACCESS_KEY="",
    )

    assert result["options"]["bucket_name"] == "chat-images"
    assert result["options"]["endpoint_url"] == "https://s3.oss-cn-beijing.aliyuncs.com"
    assert result["options"]["access_key"] == "k"
