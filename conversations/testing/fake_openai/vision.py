"""What a chat request carried besides text: pictures (OpenAI `image_url` parts, as
data URLs or URLs the fake fetches like a provider would) and attachment blocks
(`<attachment name="…" type="…">` … `</attachment>`) in the last user message.

The fake records it with the request (`requests[i]["received"]`) and, unless told
to say something else, answers with it in words, so tests assert what the model saw.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import re
from typing import Any

import aiohttp
from PIL import Image, UnidentifiedImageError

_BLOCK = re.compile(
    r'<attachment name="(?P<name>[^"]*)" type="(?P<type>[^"]*)">\n(?P<body>.*?)\n</attachment>',
    re.DOTALL,
)
_CUT = re.compile(r"is cut here: the first ([\d,]+) of ([\d,]+) tokens")


def _last_user(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message
    return None


def _picture(data: bytes, source: str) -> dict[str, Any]:
    try:
        with Image.open(io.BytesIO(data)) as picture:
            width, height, fmt = picture.width, picture.height, picture.format
    except (UnidentifiedImageError, OSError):
        width = height = None
        fmt = "unreadable"
    return {
        "source": source,
        "bytes": len(data),
        "width": width,
        "height": height,
        "format": fmt,
    }


async def _fetch(url: str) -> bytes | None:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                return None
            return await response.read()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def received(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """{"pictures": [{"source", "bytes", "width", "height", "format"}],
    "documents": [{"name", "type", "chars", "cut": [shown, total] | None}]}
    of the last user message."""
    message = _last_user(messages) or {}
    content = message.get("content")
    parts = (
        content
        if isinstance(content, list)
        else [{"type": "text", "text": content or ""}]
    )
    pictures: list[dict[str, Any]] = []
    text = ""
    for part in parts:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            text += str(part.get("text") or "")
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            if url.startswith("data:"):
                try:
                    data = base64.b64decode(url.partition(",")[2], validate=True)
                except (binascii.Error, ValueError):
                    data = b""
                pictures.append(_picture(data, "data"))
            else:
                data = await _fetch(url)
                if data is None:
                    pictures.append(
                        {
                            "source": "url",
                            "bytes": 0,
                            "width": None,
                            "height": None,
                            "format": "unreachable",
                        }
                    )
                else:
                    pictures.append(_picture(data, "url"))
    documents = []
    for block in _BLOCK.finditer(text):
        cut = _CUT.search(block.group("body"))
        documents.append(
            {
                "name": html.unescape(block.group("name")),
                "type": html.unescape(block.group("type")),
                "chars": len(block.group("body")),
                "cut": [int(n.replace(",", "")) for n in cut.groups()] if cut else None,
            }
        )
    return {"pictures": pictures, "documents": documents}


def describe(found: dict[str, Any]) -> str | None:
    """The fake's answer about what it received, or None when nothing was attached."""
    pictures, documents = found["pictures"], found["documents"]
    if not pictures and not documents:
        return None
    said = []
    if pictures:
        sizes = ", ".join(
            f"{p['width']}x{p['height']}" if p["width"] else p["format"]
            for p in pictures
        )
        said.append(
            f"{len(pictures)} picture{'s' if len(pictures) != 1 else ''} ({sizes})"
        )
    if documents:
        names = ", ".join(d["name"] + (" [cut]" if d["cut"] else "") for d in documents)
        said.append(
            f"{len(documents)} document{'s' if len(documents) != 1 else ''} ({names})"
        )
    return "I received " + " and ".join(said) + "."
