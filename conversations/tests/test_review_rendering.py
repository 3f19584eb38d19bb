"""Transcripts are rendered on the server: Markdown in, only safe HTML out."""

import pytest
from django.utils import translation
from django.utils.safestring import SafeString

from conversations.rendering import render_markdown


def test_markdown_renders_to_html():
    html = render_markdown("# Title\n\n**bold** and `code`\n\n- a\n- b")

    assert isinstance(html, SafeString)
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert "<li>a</li>" in html


def test_a_single_newline_is_a_line_break():
    html = render_markdown("Roses are red,\nviolets are blue.")

    assert "Roses are red,<br>" in html or "Roses are red,<br />" in html
    assert html.count("<p>") == 1


def test_fenced_code_keeps_its_language_class_and_escapes_its_text():
    html = render_markdown("```python\nif a < b: print('<b>')\n```")

    assert '<code class="language-python">' in html
    assert "&lt;b&gt;" in html and "<b>" not in html


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        "hi <script src=https://evil.example/x.js></script>",
        "```\n</code></pre><script>alert(1)</script>\n```",
    ],
)
def test_script_never_survives(source):
    assert "<script" not in render_markdown(source)


def test_event_handlers_are_stripped():
    html = render_markdown(
        '<img src="/images/1/" onerror="alert(1)"> <b onclick="x()">b</b>'
    )

    # raw HTML is shown as text, never as tags carrying the handlers
    assert "<img" not in html and "<b" not in html
    assert "&lt;img" in html


def test_the_sanitiser_strips_handlers_even_from_allowed_tags():
    from conversations.rendering import _cleaner

    html = _cleaner.clean(
        '<a href="https://a.example" onclick="x()">a</a><p onmouseover="y">p</p>'
    )

    assert "onclick" not in html and "onmouseover" not in html
    assert 'href="https://a.example"' in html


@pytest.mark.parametrize(
    "source",
    [
        "[click](javascript:alert(1))",
        "[click](JaVaScRiPt:alert(1))",
        "[click](vbscript:msgbox(1))",
        "[click](data:text/html;base64,PHNjcmlwdD4=)",
        "<javascript:alert(1)>",
    ],
)
def test_dangerous_links_lose_their_target(source):
    html = render_markdown(source).lower()

    assert 'href="javascript' not in html
    assert 'href="vbscript' not in html
    assert 'href="data' not in html


def test_safe_links_keep_their_target_and_get_rel():
    html = render_markdown("[site](https://example.com/a) [mail](mailto:a@example.com)")

    assert '<a href="https://example.com/a" rel="noopener nofollow">site</a>' in html
    assert 'href="mailto:a@example.com"' in html


def test_protocol_relative_links_are_dropped():
    assert "//evil.example" not in render_markdown("[x](//evil.example/path)")


def test_iframes_and_other_raw_html_do_not_render():
    html = render_markdown(
        '<iframe src="https://evil.example"></iframe><object data="x">'
    )

    assert "<iframe" not in html and "<object" not in html


@pytest.mark.parametrize(
    "source",
    [
        "![t](https://evil.example/track.png)",
        "![t](http://evil.example/track.png)",
        "![t](//evil.example/images/1/)",
        "![t](/images/1/../../admin/)",
        "![t](data:image/png;base64,iVBORw0KGgo=)",
    ],
)
def test_remote_images_are_not_loaded(source):
    html = render_markdown(source)

    assert "<img" not in html and "src=" not in html
    assert 'href="data' not in html and 'href="//' not in html


def test_a_remote_image_becomes_a_plain_link():
    html = render_markdown("![chart](https://evil.example/c.png)")

    assert (
        '<a href="https://evil.example/c.png" rel="noopener nofollow">image: chart</a>'
        in html
    )


def test_our_own_images_are_kept():
    html = render_markdown("![a cat](/images/42/)")

    assert '<img src="/images/42/" alt="a cat">' in html


def test_empty_text_renders_nothing():
    assert render_markdown("") == ""


# --- Math and code headers (static/js/math.js draws the placeholders) ---------------


@pytest.mark.parametrize(
    ("source", "html"),
    [
        ("So $e^{i\\pi}+1=0$ holds.", '<span class="math-tex">e^{i\\pi}+1=0</span>'),
        ("Then \\(a_1 + b_2\\) too.", '<span class="math-tex">a_1 + b_2</span>'),
        (
            "Inline $$\\sum_i x_i$$ display.",
            '<span class="math-tex math-display">\\sum_i x_i</span>',
        ),
        (
            "$$\nx = \\frac{1}{2}\n$$",
            '<div class="math-tex math-display">\nx = \\frac{1}{2}\n</div>',
        ),
        (
            "\\[\n\\int_0^1 x\\,dx\n\\]",
            '<div class="math-tex math-display">\n\\int_0^1 x\\,dx\n</div>',
        ),
        ("$a<b$", '<span class="math-tex">a&lt;b</span>'),
    ],
)
def test_math_becomes_tex_placeholders_markdown_never_touches(source, html):
    assert html in render_markdown(source)


@pytest.mark.parametrize(
    "source",
    [
        "`$x$` in code",
        "```\n$$x$$\n```",
        "    $y$ indented code",
        "costs $5 and $10",
        "a $ b $ c",
        "escaped \\$x\\$",
    ],
)
def test_code_and_dollar_amounts_are_never_math(source):
    assert "math-tex" not in render_markdown(source)


def test_underscores_inside_math_are_not_emphasis():
    html = render_markdown("$a_1 + b_2 = c_1$ and *real* emphasis")
    assert '<span class="math-tex">a_1 + b_2 = c_1</span>' in html
    assert "<em>real</em>" in html and html.count("<em>") == 1


def test_only_our_own_classes_survive_on_spans_and_divs():
    html = render_markdown("$x$")
    assert 'class="math-tex"' in html
    from conversations.rendering import _cleaner

    dirty = '<span class="math-tex evil">x</span><div class="code-block" onclick="x">y</div>'
    assert _cleaner.clean(dirty) == '<span>x</span><div class="code-block">y</div>'


def test_code_blocks_carry_a_language_label():
    source = "```python\nprint(1)\n```\n\n```\nplain\n```"
    with translation.override("en"):
        html = render_markdown(source)
    assert '<span class="code-lang">python</span>' in html
    assert '<span class="code-lang">plain text</span>' in html
    with translation.override("zh-hans"):
        assert '<span class="code-lang">纯文本</span>' in render_markdown(source)
