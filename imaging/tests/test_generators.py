import base64
import io

import httpx2
import openai
import pytest
from PIL import Image

from conftest import free_port
from imaging.exceptions import ImageGenerationError
from imaging.generators import (
    IMAGE_TOOL_SCHEMA,
    DemoImageGenerator,
    OpenAIImageGenerator,
    get_image_generator,
    picture_from_bytes,
    translate_openai_error,
)

from .conftest import png_bytes


def image_of(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# --- offline demo ----------------------------------------------------------------------


async def test_demo_draws_a_png_of_the_requested_size():
    picture = await DemoImageGenerator().generate(
        prompt="A lighthouse at dusk", size="1536x1024", model="any"
    )

    assert (picture.content_type, picture.width, picture.height) == (
        "image/png",
        1536,
        1024,
    )
    img = image_of(picture.data)
    assert (img.format, img.size) == ("PNG", (1536, 1024))
    # Not a flat fill: the prompt and the label are drawn on it.
    assert len(img.convert("L").getcolors(maxcolors=256)) > 20


async def test_demo_pictures_differ_by_prompt():
    a = await DemoImageGenerator().generate(prompt="a fox", size="1024x1024", model="m")
    b = await DemoImageGenerator().generate(
        prompt="a boat", size="1024x1024", model="m"
    )

    assert a.data != b.data


async def test_demo_refuses_a_malformed_size():
    with pytest.raises(ImageGenerationError) as caught:
        await DemoImageGenerator().generate(prompt="x", size="huge", model="m")
    assert caught.value.code == "bad_request"


def test_factory_reads_settings_at_call_time(settings):
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = ""
    assert isinstance(get_image_generator(), DemoImageGenerator)

    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"  # a local server needs no key
    generator = get_image_generator()
    assert isinstance(generator, OpenAIImageGenerator)
    assert generator.base_url == "http://127.0.0.1:9/v1"


def test_images_may_use_their_own_provider(settings):
    # given chat on a local server without an images API, and images elsewhere
    settings.OPENAI_API_KEY = ""
    settings.OPENAI_BASE_URL = "http://127.0.0.1:8080/v1"
    settings.IMAGE_BASE_URL = "https://images.example/v1"
    settings.IMAGE_API_KEY = "image-key"
    generator = get_image_generator()
    # then the image generator talks to the images provider with its key
    assert isinstance(generator, OpenAIImageGenerator)
    assert generator.base_url == "https://images.example/v1"
    assert generator.api_key == "image-key"
    # and without its own settings it follows the chat provider
    settings.IMAGE_BASE_URL = settings.IMAGE_API_KEY = ""
    settings.OPENAI_API_KEY = "chat-key"
    generator = get_image_generator()
    assert generator.base_url == "http://127.0.0.1:8080/v1"
    assert generator.api_key == "chat-key"


async def test_a_server_without_an_images_api_says_so(settings):
    # given a provider that answers 404 on /v1/images/generations, as llama.cpp does
    from aiohttp import web

    async def not_found(request):
        return web.json_response({"detail": "Not Found"}, status=404)

    app = web.Application()
    app.router.add_post("/v1/images/generations", not_found)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings.IMAGE_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.IMAGE_MAX_RETRIES = 0
    try:
        with pytest.raises(ImageGenerationError) as caught:
            await get_image_generator().generate(
                prompt="a fox", size="1024x1024", model="gpt-image-1"
            )
    finally:
        await runner.cleanup()
    # then the user reads that this provider cannot draw, and what to configure
    assert caught.value.code == "unavailable"
    assert "not available with this provider" in caught.value.message
    assert "IMAGE_BASE_URL" in caught.value.message


def test_tool_schema_is_an_openai_function_tool_requiring_a_prompt():
    function = IMAGE_TOOL_SCHEMA["function"]
    assert IMAGE_TOOL_SCHEMA["type"] == "function"
    assert function["name"] == "generate_image"
    assert function["parameters"]["required"] == ["prompt"]


# --- validating what the provider sent ------------------------------------------------------


def test_picture_validation_accepts_png_jpeg_and_webp_and_measures_them():
    for fmt, content_type in [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
    ]:
        out = io.BytesIO()
        Image.new("RGB", (40, 30), "red").save(out, format=fmt)
        picture = picture_from_bytes(out.getvalue())
        assert (picture.content_type, picture.width, picture.height) == (
            content_type,
            40,
            30,
        )


@pytest.mark.parametrize(
    "data",
    [
        b"<html><script>alert(1)</script></html>",
        b"",
        png_bytes()[:60],  # truncated
        b'<svg xmlns="http://www.w3.org/2000/svg"></svg>',
    ],
)
def test_picture_validation_refuses_what_is_not_a_whole_image(data):
    with pytest.raises(ImageGenerationError) as caught:
        picture_from_bytes(data)
    assert caught.value.code == "invalid_image"


def test_picture_validation_refuses_formats_we_do_not_serve():
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, format="GIF")

    with pytest.raises(ImageGenerationError, match="unsupported format"):
        picture_from_bytes(out.getvalue())


# --- the OpenAI-compatible provider (the fake server over real HTTP) ---------------------------


async def test_openai_generator_returns_the_providers_png(fake_openai):
    generator = get_image_generator()

    picture = await generator.generate(
        prompt="a red fox", size="1024x1536", model="fake-image"
    )

    assert (picture.content_type, picture.width, picture.height) == (
        "image/png",
        256,
        384,
    )
    assert picture.revised_prompt == "a red fox (as imagined by the fake)"
    assert image_of(picture.data).format == "PNG"
    body = fake_openai.requests[-1]["body"]
    assert body["model"] == "fake-image" and body["size"] == "1024x1536"
    assert body["response_format"] == "b64_json"


async def test_a_provider_url_is_downloaded_at_once(fake_openai, settings):
    # GPT image models refuse response_format, so none is sent; this provider then
    # answers with a URL, which must be fetched before it expires. (The fake serves
    # on loopback, which downloads may only reach when allowed: test_download.py.)
    fake_openai.configure(image_mode="url")
    settings.IMAGE_DOWNLOAD_ALLOWED_NETWORKS = ["127.0.0.1/32"]

    picture = await get_image_generator().generate(
        prompt="a boat", size="1024x1024", model="gpt-image-1"
    )

    assert "response_format" not in fake_openai.requests[0]["body"]
    assert [r["path"] for r in fake_openai.requests][-1].endswith("/images/generations")
    assert (picture.width, picture.height) == (256, 256)


async def test_an_oversized_download_is_refused(fake_openai, settings):
    fake_openai.configure(image_mode="url")
    settings.IMAGE_DOWNLOAD_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    settings.IMAGE_MAX_BYTES = 100

    with pytest.raises(ImageGenerationError) as caught:
        await get_image_generator().generate(
            prompt="a boat", size="1024x1024", model="gpt-image-1"
        )
    # the one error of every refused download (imaging/download.py)
    assert caught.value.code == "upstream_error"
    assert "could not be downloaded" in caught.value.message


async def test_a_content_policy_refusal_reads_as_such(fake_openai):
    with pytest.raises(ImageGenerationError) as caught:
        await get_image_generator().generate(
            prompt="something [[policy]]", size="1024x1024", model="fake-image"
        )
    assert caught.value.code == "content_policy"
    assert caught.value.message.startswith(
        "The image was refused by the provider's safety system: "
    )
    assert len(caught.value.message) > len(
        "The image was refused by the provider's safety system: "
    )


async def test_an_upstream_500_reads_as_a_provider_error(fake_openai, settings):
    settings.IMAGE_MAX_RETRIES = 1

    with pytest.raises(ImageGenerationError) as caught:
        await get_image_generator().generate(
            prompt="x [[500]]", size="1024x1024", model="fake-image"
        )
    assert caught.value.code == "upstream_error"
    assert "internal error (HTTP 500)" in caught.value.message
    assert len(fake_openai.requests) == 2  # one retry, then a readable failure


async def test_a_slow_provider_times_out_with_a_readable_reason(fake_openai, settings):
    settings.IMAGE_TIMEOUT = 0.5
    settings.IMAGE_MAX_RETRIES = 0

    with pytest.raises(ImageGenerationError) as caught:
        await get_image_generator().generate(
            prompt="x [[slow]]", size="1024x1024", model="fake-image"
        )
    assert caught.value.code == "timeout"
    assert "took too long" in caught.value.message


async def test_an_unreachable_provider_reads_as_unavailable(settings):
    settings.OPENAI_API_KEY = "k"
    settings.OPENAI_BASE_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.IMAGE_MAX_RETRIES = 0

    with pytest.raises(ImageGenerationError) as caught:
        await get_image_generator().generate(prompt="x", size="1024x1024", model="m")
    assert caught.value.code == "unavailable"
    assert "could not be reached" in caught.value.message


def status_error(cls, status: int, body: dict) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://provider/v1/images/generations")
    response = httpx2.Response(status, request=request, json=body)
    return cls(body["error"]["message"], response=response, body=body)


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (
            status_error(
                openai.RateLimitError,
                429,
                {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
            ),
            "rate_limited",
            "too many requests",
        ),
        (
            status_error(
                openai.RateLimitError,
                429,
                {"error": {"message": "pay up", "code": "insufficient_quota"}},
            ),
            "rate_limited",
            "quota",
        ),
        (
            status_error(
                openai.AuthenticationError, 401, {"error": {"message": "bad key"}}
            ),
            "unavailable",
            "credentials",
        ),
        (
            status_error(openai.NotFoundError, 404, {"error": {"message": "no model"}}),
            "bad_request",
            "not available",
        ),
        (
            status_error(
                openai.NotFoundError, 404, {"error": {"message": "Not Found"}}
            ),
            "unavailable",
            "Image generation is not available with this provider",
        ),
        (
            status_error(
                openai.BadRequestError,
                400,
                {
                    "error": {
                        "message": "Your request was rejected by the safety system.",
                        "code": "moderation_blocked",
                    }
                },
            ),
            "content_policy",
            "safety system: Your request was rejected",
        ),
        (
            status_error(
                openai.BadRequestError, 400, {"error": {"message": "size is wrong"}}
            ),
            "bad_request",
            "size is wrong",
        ),
    ],
)
def test_provider_errors_become_readable_image_errors(error, code, words):
    translated = translate_openai_error(error, timeout=60)

    assert translated.code == code
    assert words in translated.message


def test_b64_payload_larger_than_the_limit_is_refused_before_decoding():
    generator = OpenAIImageGenerator(
        api_key="k",
        base_url=None,
        timeout=1,
        max_retries=0,
        max_bytes=10,
        download_timeout=1,
    )

    with pytest.raises(ImageGenerationError, match="too large"):
        generator._decode(base64.b64encode(b"x" * 100).decode())
