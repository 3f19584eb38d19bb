"""The streaming renderer shows, piece by piece, what a full render shows."""

from __future__ import annotations

import pytest

from conftest import PASSWORD
from tests.factories import UserFactory

from .conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SAMPLE = """# Title

A paragraph with **bold**, `code` and a [link](https://example.com).

```python
def f():

    return 1
```

1. one
2. two

   still two

> quoted
> text

~~~
tilde fence

with a blank line
~~~

Last words without a newline"""

STREAM_VS_FULL = """async (sample) => {
    const src = document.querySelector('script[type=module]').src;
    const m = await import(src.replace(/app(\\.[0-9a-f]+)?\\.js$/, 'markdown.js'));
    const norm = (el) => el.innerText.replace(/\\s+/g, ' ').trim();
    const full = document.createElement('div');
    full.appendChild(m.renderMarkdown(sample));
    const box = document.createElement('div');
    document.body.append(full, box);
    const renderer = new m.StreamRenderer(box);
    let mismatch = null;
    for (let i = 1; i <= sample.length; i += 3) {
        renderer.update(sample.slice(0, i));
        if (!sample.slice(0, i).includes('```') && norm(box).length === 0 && i > 10) mismatch = i;
    }
    renderer.update(sample, { final: true });
    return {
        full: norm(full), streamed: norm(box), mismatch,
        codeBlocks: [full.querySelectorAll('pre').length, box.querySelectorAll('pre').length],
        lists: [full.querySelectorAll('ol li').length, box.querySelectorAll('ol li').length],
    };
}"""


def test_streamed_markdown_ends_as_the_full_render(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    result = page.evaluate(STREAM_VS_FULL, SAMPLE)

    assert result["streamed"] == result["full"]
    assert result["codeBlocks"] == [2, 2]
    assert result["lists"] == [2, 2]
    assert result["mismatch"] is None


def test_a_single_newline_in_a_reply_is_a_line_break(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    breaks = page.evaluate(
        """async () => {
            const src = document.querySelector('script[type=module]').src;
            const m = await import(src.replace(/app(\\.[0-9a-f]+)?\\.js$/, 'markdown.js'));
            const box = document.createElement('div');
            box.appendChild(m.renderMarkdown('Roses are red,\\nviolets are blue.'));
            return [box.querySelectorAll('br').length, box.querySelectorAll('p').length];
        }"""
    )

    assert breaks == [1, 1]


def test_stable_boundary_never_splits_a_code_fence_or_an_indented_continuation(
    page, site
):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    boundaries = page.evaluate(
        """async (cases) => {
            const src = document.querySelector('script[type=module]').src;
            const m = await import(src.replace(/app(\\.[0-9a-f]+)?\\.js$/, 'markdown.js'));
            return cases.map((text) => m.stableBoundary(text, 0));
        }""",
        [
            "para one\n\npara two\n",
            "```\ncode\n\nmore code\n",
            "```\ncode\n\n```\n\nafter\n",
            "- item\n\n  continued\n",
            "no newline yet",
        ],
    )

    assert boundaries == [10, 0, 15, 0, 0]
