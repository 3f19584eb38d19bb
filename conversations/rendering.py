"""Markdown to HTML on the server, sanitised: model output and user text are untrusted.

markdown-it-py renders (raw HTML in the source is escaped, not passed through), then
nh3 keeps an allow-list of tags and attributes. Links keep only http, https and
mailto (plus relative paths) and get `rel="noopener nofollow"`; images are kept only
when they point at this site's own `/images/<id>/` files, so a transcript never
loads anything from another host.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import nh3
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

# `breaks`: a single newline in a reply is a line break (a poem stays a poem), as
# in the chat page (static/js/markdown.js) and peers such as ChatGPT.
_md = MarkdownIt(
    "commonmark",
    {"html": False, "linkify": False, "typographer": False, "breaks": True},
)
_md.enable("table")
_md.enable("strikethrough")

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "del", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "a", "img",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    "code": {"class"},  # "language-python" from fenced blocks
}
# An image path on this site: /images/<id>/ and nothing that could leave it.
_OWN_IMAGE = re.compile(r"^/images/(\d+)/(?:\?[\w=&]*)?$")
# The same image seen through a share link (conversations/share_views.py).
_SHARED_IMAGE = re.compile(r"^/s/[\w-]+/images/\d+/$")


def _render_image(self, tokens, idx, options, env) -> str:
    """Our own images render; any other becomes a link, so nothing loads by itself."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    own = _OWN_IMAGE.match(src)
    image_src = env.get("image_src")
    if own and image_src is None:
        return self.image(tokens, idx, options, env)
    if own and (mapped := image_src(int(own.group(1)))):
        token.attrSet("src", mapped)
        return self.image(tokens, idx, options, env)
    alt = self.renderInlineAsText(token.children or [], options, env)
    return f'<a href="{escapeHtml(src)}">image: {escapeHtml(alt)}</a>'


_md.add_render_rule("image", _render_image)


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src":
        return value if _OWN_IMAGE.match(value) else None
    return _common_filter(tag, attr, value)


def _shared_attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "img" and attr == "src":
        return value if _SHARED_IMAGE.match(value) else None
    return _common_filter(tag, attr, value)


def _common_filter(tag: str, attr: str, value: str) -> str | None:
    if tag == "a" and attr == "href" and value.startswith("//"):
        return None  # protocol-relative: another host with no scheme to check
    if tag == "code" and attr == "class":
        return value if re.fullmatch(r"language-[\w+-]{1,30}", value) else None
    return value


def _cleaner_for(attribute_filter: Callable[[str, str, str], str | None]) -> Any:
    return nh3.Cleaner(
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=attribute_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener nofollow",
        strip_comments=True,
    )


_cleaner = _cleaner_for(_attribute_filter)
_shared_cleaner = _cleaner_for(_shared_attribute_filter)


def render_markdown(
    text: str, *, image_src: Callable[[int], str | None] | None = None
) -> SafeString:
    """Markdown source to HTML that is safe to insert into a page as is.

    `image_src` (a shared page) maps the id of one of our images to the URL the
    page may show it under, or None: that image then becomes a plain link.
    """
    if not text:
        return mark_safe("")
    if image_src is None:
        return mark_safe(_cleaner.clean(_md.render(text)))  # noqa: S308 - sanitised above
    html = _md.render(text, {"image_src": image_src})
    return mark_safe(_shared_cleaner.clean(html))  # noqa: S308 - sanitised above
