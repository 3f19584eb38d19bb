"""Image generation gateway: the only module that imports openai for images.

`ImageGenerator` is the small protocol the services use. `OpenAIImageGenerator` talks
to any OpenAI-compatible images API; `DemoImageGenerator` draws the prompt locally
with Pillow (no network) and labels the picture "offline demo".
`get_image_generator()` picks one from the settings, read at call time.

Every failure leaves this module as `ImageGenerationError(code, message)`, with a
message written for the person who asked for the picture.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import colorsys
import hashlib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import openai
from django.conf import settings
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from .download import DownloadPolicy, DownloadRefused, download, parse_networks
from .exceptions import ImageGenerationError

logger = logging.getLogger(__name__)

# Formats we store and serve; anything else the provider returns is refused.
CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# What the chat model is offered as a tool (OpenAI "tools" entry). The engine adds
# it to the request when settings.IMAGE_TOOL_ENABLED and the model supports tools.
IMAGE_TOOL_NAME = "generate_image"
IMAGE_TOOL_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": IMAGE_TOOL_NAME,
        "description": (
            "Draw a picture for the user and show it in the conversation. Use it when "
            "the user asks for an image, drawing, illustration or photo. Write a "
            "detailed, self-contained description of the picture in the prompt."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "prompt": {
                    "type": "string",
                    "description": "A detailed description of the picture to draw.",
                },
                "size": {
                    "type": "string",
                    "description": "Width x height in pixels; leave out for the default.",
                },
            },
            "required": ["prompt"],
            "additionalProperties": False,
        },
    },
}


@dataclass(frozen=True)
class GeneratedPicture:
    data: bytes
    content_type: str
    width: int
    height: int
    revised_prompt: str = ""


class ImageGenerator(Protocol):
    async def generate(
        self, *, prompt: str, size: str, model: str
    ) -> GeneratedPicture: ...


def picture_from_bytes(data: bytes, *, revised_prompt: str = "") -> GeneratedPicture:
    """Check that `data` really is a PNG, JPEG or WebP image and measure it."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        # verify() leaves the image unusable; reopen to read format and size.
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageGenerationError(
            "invalid_image", "The image provider sent something that is not a picture."
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageGenerationError(
            "invalid_image", "The image provider sent a picture that is far too large."
        ) from exc
    content_type = CONTENT_TYPES.get(fmt or "")
    if content_type is None:
        raise ImageGenerationError(
            "invalid_image", f"The image provider sent an unsupported format ({fmt})."
        )
    return GeneratedPicture(data, content_type, width, height, revised_prompt)


def parse_size(size: str) -> tuple[int, int]:
    try:
        w, h = (int(part) for part in size.lower().split("x"))
    except ValueError as exc:
        raise ImageGenerationError(
            "bad_request", f"Unknown image size {size!r}."
        ) from exc
    if not (16 <= w <= 4096 and 16 <= h <= 4096):
        raise ImageGenerationError("bad_request", f"Unsupported image size {size!r}.")
    return w, h


# --- OpenAI-compatible provider --------------------------------------------------------


def _provider_text(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        detail = body.get("error", body)
        if isinstance(detail, dict) and isinstance(detail.get("message"), str):
            return detail["message"][:300]
    return (exc.message or "")[:300]


def _error_code(exc: openai.APIError) -> str:
    body = exc.body
    if isinstance(body, dict):
        detail = body.get("error", body)
        if isinstance(detail, dict):
            return str(detail.get("code") or detail.get("type") or "")
    return exc.code or ""


NOT_AVAILABLE_MESSAGE = (
    "Image generation is not available with this provider. An operator can point "
    "IMAGE_BASE_URL and IMAGE_API_KEY at a provider with an images API (for example "
    "OpenAI) while chat stays on this one."
)

_POLICY_CODES = {"content_policy_violation", "moderation_blocked", "content_filter"}


def translate_openai_error(exc: Exception, *, timeout: float) -> ImageGenerationError:
    """Turn an openai SDK exception into a message a user can act on."""
    if isinstance(exc, openai.APITimeoutError):
        return ImageGenerationError(
            "timeout",
            f"The image took too long to generate (over {timeout:g} seconds). "
            "Please try again.",
        )
    if isinstance(exc, openai.APIConnectionError):
        return ImageGenerationError(
            "unavailable",
            "The image provider could not be reached. Please try again later.",
        )
    if isinstance(exc, openai.APIStatusError):
        code, text = _error_code(exc), _provider_text(exc)
        if code in _POLICY_CODES or (
            exc.status_code == 400
            and ("safety" in text.lower() or "policy" in text.lower())
        ):
            return ImageGenerationError(
                "content_policy",
                f"The image was refused by the provider's safety system: {text}",
            )
        if isinstance(exc, openai.RateLimitError):
            if code == "insufficient_quota":
                return ImageGenerationError(
                    "rate_limited",
                    "The image provider's quota for this site is used up.",
                )
            return ImageGenerationError(
                "rate_limited",
                "The image provider is receiving too many requests. "
                "Please try again in a minute.",
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return ImageGenerationError(
                "unavailable", "The image provider refused this site's credentials."
            )
        if isinstance(exc, openai.NotFoundError):
            if "model" in text.lower():
                return ImageGenerationError(
                    "bad_request",
                    "The image model is not available at the provider. An operator "
                    "must check IMAGE_MODEL.",
                )
            # No images API at all (llama.cpp, Ollama and vLLM answer 404).
            return ImageGenerationError("unavailable", NOT_AVAILABLE_MESSAGE)
        if exc.status_code >= 500:
            return ImageGenerationError(
                "upstream_error",
                f"The image provider had an internal error (HTTP {exc.status_code}). "
                "Please try again.",
            )
        return ImageGenerationError(
            "bad_request", f"The image provider rejected the request: {text}"
        )
    return ImageGenerationError(
        "upstream_error", "The image provider sent an answer we could not read."
    )


class OpenAIImageGenerator:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout: float,
        max_retries: int,
        max_bytes: int,
        download_timeout: float,
        download_hosts: Sequence[str] = (),
        download_networks: Sequence[str] = (),
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_bytes = max_bytes
        self.download_timeout = download_timeout
        self.download_policy = DownloadPolicy(
            max_bytes=max_bytes,
            timeout=download_timeout,
            hosts=tuple(download_hosts),
            allowed_networks=tuple(parse_networks(download_networks)),
        )

    async def generate(self, *, prompt: str, size: str, model: str) -> GeneratedPicture:
        params: dict[str, Any] = {
            "prompt": prompt,
            "model": model,
            "size": size,
            "n": 1,
        }
        # GPT image models always answer in base64 and refuse the parameter; older
        # models (dall-e-*, many compatible providers) default to a URL.
        if not model.startswith("gpt-image"):
            params["response_format"] = "b64_json"
        # A client per call: its connection pool belongs to the running event loop,
        # and management commands run each image in a fresh loop.
        async with openai.AsyncOpenAI(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        ) as client:
            try:
                response = await client.images.generate(**params)
            except openai.OpenAIError as exc:
                logger.warning("image generation failed: %r", exc)
                raise translate_openai_error(exc, timeout=self.timeout) from exc
        if not response.data:
            raise ImageGenerationError(
                "upstream_error", "The image provider sent no image."
            )
        item = response.data[0]
        revised = item.revised_prompt or ""
        if item.b64_json:
            return picture_from_bytes(
                self._decode(item.b64_json), revised_prompt=revised
            )
        if item.url:
            data = await self._download(item.url)
            return picture_from_bytes(data, revised_prompt=revised)
        raise ImageGenerationError(
            "upstream_error", "The image provider sent no image."
        )

    def _decode(self, b64: str) -> bytes:
        if len(b64) > self.max_bytes * 4 // 3 + 4:
            raise ImageGenerationError(
                "invalid_image", "The generated image is too large."
            )
        try:
            return base64.b64decode(b64, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ImageGenerationError(
                "invalid_image", "The image provider sent a damaged image."
            ) from exc

    async def _download(self, url: str) -> bytes:
        """Fetch a provider URL now (they expire), through imaging/download.py: no
        inward address on any hop, bounded in size and time, one error for all."""
        if url.startswith("data:"):
            return self._decode(url.partition(",")[2])
        try:
            return await download(url, policy=self.download_policy)
        except DownloadRefused as exc:
            logger.warning("image download refused: %s", exc.reason)
            raise ImageGenerationError(
                "upstream_error",
                "The generated image could not be downloaded from the provider.",
            ) from exc


# --- Offline demo -------------------------------------------------------------------------

# The first that is installed; CJK fonts first so Chinese prompts and labels draw.
_FONT_CANDIDATES = (
    "NotoSansCJK-Regular.ttc",
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
    "DejaVuSans.ttf",
    "LiberationSans-Regular.ttf",
)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in _FONT_CANDIDATES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def _palette(prompt: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Two soft colours derived from the prompt, so each prompt looks its own."""
    digest = hashlib.sha256(prompt.encode()).digest()
    hue = digest[0] / 255

    def rgb(h: float, lightness: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hls_to_rgb(h % 1.0, lightness, 0.55)
        return int(r * 255), int(g * 255), int(b * 255)

    return rgb(hue, 0.35), rgb(hue + 0.18, 0.62)


def _wrap(text: str, font: Any, max_width: float) -> list[str]:
    """Greedy word wrap measured in pixels (prompts may be in any script)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # A word (or a run of CJK text) wider than the line: cut by characters.
            line = ""
            for char in word:
                if font.getlength(line + char) > max_width and line:
                    lines.append(line)
                    line = ""
                line += char
        if line:
            lines.append(line)
    return lines


# A prompt in Chinese gets the banner in Chinese.
_CJK = re.compile(r"[\u3400-\u9fff]")


def demo_banner(prompt: str) -> str:
    """The banner across a demo picture, in the prompt's language."""
    if _CJK.search(prompt):
        return "离线演示 · 未配置图像模型"
    return "offline demo · no image model configured"


def draw_demo_picture(prompt: str, width: int, height: int) -> bytes:
    top, bottom = _palette(prompt)
    mask = Image.linear_gradient("L").resize((width, height))
    img = Image.composite(
        Image.new("RGB", (width, height), bottom),
        Image.new("RGB", (width, height), top),
        mask,
    )
    draw = ImageDraw.Draw(img, "RGBA")
    unit = min(width, height)
    # A few translucent circles: something to look at besides the words.
    digest = hashlib.sha256(prompt.encode()).digest()
    for i in range(5):
        cx = digest[1 + i] / 255 * width
        cy = digest[6 + i] / 255 * height
        r = unit * (0.12 + digest[11 + i] / 255 * 0.25)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 255, 40))

    margin = unit // 12
    label_font = _font(max(14, unit // 28))
    label = demo_banner(prompt)
    draw.rounded_rectangle(
        (margin // 2, margin // 2, width - margin // 2, margin // 2 + unit // 14),
        radius=unit // 60,
        fill=(0, 0, 0, 110),
    )
    draw.text((margin, margin // 2 + unit // 56), label, font=label_font, fill="white")

    text_font = _font(max(16, unit // 16))
    lines = _wrap(prompt, text_font, width - 2 * margin)[:8] or ["(empty prompt)"]
    line_height = int(unit / 16 * 1.3)
    y = (height - line_height * len(lines)) // 2
    for line in lines:
        draw.text((margin + 3, y + 3), line, font=text_font, fill=(0, 0, 0, 90))
        draw.text((margin, y), line, font=text_font, fill="white")
        y += line_height

    out = io.BytesIO()
    img.save(out, format="PNG", optimize=False)
    return out.getvalue()


DEMO_IMAGE_MODEL = "offline-demo"


class DemoImageGenerator:
    """Draws the prompt locally: the site works (and is testable) with no provider."""

    async def generate(self, *, prompt: str, size: str, model: str) -> GeneratedPicture:
        width, height = parse_size(size)
        data = await asyncio.to_thread(draw_demo_picture, prompt, width, height)
        return picture_from_bytes(data, revised_prompt="")


def image_model_default() -> str:
    """The model recorded on a new image: the demo's own name when the demo draws."""
    if not settings.OPENAI_API_KEY and not settings.OPENAI_BASE_URL:
        return DEMO_IMAGE_MODEL
    return settings.IMAGE_MODEL


def get_image_generator() -> ImageGenerator:
    """The configured generator: IMAGE_BASE_URL / IMAGE_API_KEY, each defaulting to
    the chat provider's (so chat can run on a local server and drawing elsewhere);
    the offline demo when neither is set."""
    api_key = settings.IMAGE_API_KEY or settings.OPENAI_API_KEY
    base_url = settings.IMAGE_BASE_URL or settings.OPENAI_BASE_URL
    if not api_key and not base_url:
        return DemoImageGenerator()
    return OpenAIImageGenerator(
        # Local OpenAI-compatible servers often need no key, but the SDK wants one.
        api_key=api_key or "not-needed",
        base_url=base_url or None,
        timeout=settings.IMAGE_TIMEOUT,
        max_retries=settings.IMAGE_MAX_RETRIES,
        max_bytes=settings.IMAGE_MAX_BYTES,
        download_timeout=settings.IMAGE_DOWNLOAD_TIMEOUT,
        download_hosts=settings.IMAGE_DOWNLOAD_HOSTS,
        download_networks=settings.IMAGE_DOWNLOAD_ALLOWED_NETWORKS,
    )
