r"""Markdown to HTML on the server, sanitised: model output and user text are untrusted.

markdown-it-py renders (raw HTML in the source is escaped, not passed through), then
nh3 keeps an allow-list of tags and attributes. Links keep only http, https and
mailto (plus relative paths) and get `rel="noopener nofollow"`; images are kept only
when they point at this site's own `/images/<id>/` files, so a transcript never
loads anything from another host.

Math (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`) becomes the same placeholders as in
static/js/math.js: the TeX as text in `.math-tex`, drawn by KaTeX in the browser
(the chat page's first paint and the admin's transcripts load static/js/math.js),
since KaTeX is JavaScript; without it the TeX stays readable. Code blocks get the
chat page's header with their language.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import nh3
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.rules_block import StateBlock
from markdown_it.rules_inline import StateInline

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
    "table", "thead", "tbody", "tr", "th", "td", "a", "img", "span", "div",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "th": {"align"},
    "td": {"align"},
    "code": {"class"},  # "language-python" from fenced blocks
    "span": {"class"},
    "div": {"class"},
}
# Classes our own render rules give spans and divs; any other is dropped.
_OWN_CLASSES = {"math-tex", "math-display", "code-block", "code-head", "code-lang"}
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


# --- Math: the same syntax as static/js/math.js -----------------------------------


def _closing_dollar(src: str, start: int, end: int) -> int:
    """`$` closes math unless it follows a space or a digit follows it ("$5 and $10")."""
    i = src.find("$", start, end)
    while i != -1:
        before = src[i - 1]
        after = src[i + 1] if i + 1 < len(src) else ""
        if before != "\\" and not before.isspace() and not after.isdigit():
            return i
        i = src.find("$", i + 1, end)
    return -1


_INLINE_DELIMITERS = (
    ("$$", "$$", True),
    ("$", "$", False),
    ("\\(", "\\)", False),
    ("\\[", "\\]", True),
)


def _math_inline(state: StateInline, silent: bool) -> bool:
    src, pos, end_max = state.src, state.pos, state.posMax
    found = next((d for d in _INLINE_DELIMITERS if src.startswith(d[0], pos)), None)
    if found is None:
        return False
    open_, close, display = found
    start = pos + len(open_)
    if open_ == "$":
        if start >= end_max or src[start].isspace():
            return False
        end = _closing_dollar(src, start, end_max)
    else:
        end = src.find(close, start, end_max)
    if end == -1 or end + len(close) > end_max:
        return False
    tex = src[start:end]
    if not tex.strip() or "`" in tex:  # a code span overlaps: code wins
        return False
    if not silent:
        token = state.push("math_inline", "span", 0)
        token.content = tex
        token.meta = {"display": display}
    state.pos = end + len(close)
    return True


def _math_block(
    state: StateBlock, start_line: int, end_line: int, silent: bool
) -> bool:
    if state.sCount[start_line] - state.blkIndent >= 4:
        return False
    first = state.src[
        state.bMarks[start_line] + state.tShift[start_line] : state.eMarks[start_line]
    ]
    pair = next(
        (p for p in (("$$", "$$"), ("\\[", "\\]")) if first.startswith(p[0])), None
    )
    if pair is None:
        return False
    open_, close = pair
    rest, line, lines = first[len(open_) :], start_line, []
    if close in rest and not rest.rstrip().endswith(close):
        return False  # "$$x$$ and more": inline math in a paragraph
    while True:
        trimmed = rest.rstrip()
        if trimmed.endswith(close) and (
            line > start_line or len(trimmed) >= len(close)
        ):
            lines.append(trimmed[: len(trimmed) - len(close)])
            break
        lines.append(rest)
        line += 1
        if line >= end_line:
            return False
        rest = state.src[state.bMarks[line] + state.tShift[line] : state.eMarks[line]]
        if not rest.strip():
            return False  # display math never spans a blank line
    tex = "\n".join(lines)
    if not tex.strip():
        return False
    if silent:
        return True
    token = state.push("math_block", "div", 0)
    token.block = True
    token.content = tex
    token.map = [start_line, line + 1]
    state.line = line + 1
    return True


def _render_math_inline(self, tokens, idx, options, env) -> str:
    cls = "math-tex math-display" if tokens[idx].meta["display"] else "math-tex"
    return f'<span class="{cls}">{escapeHtml(tokens[idx].content)}</span>'


def _render_math_block(self, tokens, idx, options, env) -> str:
    return (
        f'<div class="math-tex math-display">{escapeHtml(tokens[idx].content)}</div>\n'
    )


def _render_fence(self, tokens, idx, options, env) -> str:
    """A code block with the chat page's header naming its language."""
    info = tokens[idx].info.split()
    label = info[0] if info else gettext("plain text")
    return (
        '<div class="code-block"><div class="code-head"><span class="code-lang">'
        f"{escapeHtml(label)}</span></div>{self.fence(tokens, idx, options, env)}</div>"
    )


_md.inline.ruler.before("escape", "math_inline", _math_inline)
_md.block.ruler.before(
    "fence",
    "math_block",
    _math_block,
    {"alt": ["paragraph", "reference", "blockquote", "list"]},
)
_md.add_render_rule("math_inline", _render_math_inline)
_md.add_render_rule("math_block", _render_math_block)
_md.add_render_rule("fence", _render_fence)


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
    if tag in ("span", "div") and attr == "class":
        return value if set(value.split()) <= _OWN_CLASSES else None
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
