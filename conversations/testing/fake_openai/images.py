"""Small real PNGs for the fake image endpoint."""

from __future__ import annotations

import hashlib
import io
import textwrap

from PIL import Image, ImageDraw

DEFAULT_SIZE = "1024x1024"


def parse_size(size: str | None) -> tuple[int, int]:
    """`"1536x1024"` → (1536, 1024); `"auto"` or nothing → 1024x1024."""
    if not size or size == "auto":
        size = DEFAULT_SIZE
    width, _, height = size.lower().partition("x")
    return int(width), int(height)


def render_png(prompt: str, size: str | None) -> bytes:
    """A PNG at a quarter of the requested size, its colour derived from the prompt,
    with the prompt written on it."""
    width, height = parse_size(size)
    width, height = max(width // 4, 16), max(height // 4, 16)
    digest = hashlib.sha256(prompt.encode()).digest()
    background = (digest[0] // 2 + 64, digest[1] // 2 + 64, digest[2] // 2 + 64)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    lines = textwrap.wrap(prompt, width=max(width // 7, 8))[: max(height // 14, 1)]
    draw.multiline_text((6, 6), "\n".join(lines), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
