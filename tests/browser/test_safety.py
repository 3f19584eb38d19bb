"""Model output is untrusted: nothing in it runs or reaches another host."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from conftest import PASSWORD
from tests.factories import UserFactory

from .conftest import log_in, reload, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "\n\n".join(
    [
        "Intro text PWNED-free.",
        "<script>console.log('PWNED-script')</script>",
        "<img src=x onerror=\"console.log('PWNED-onerror')\">",
        "[click me](javascript:console.log('PWNED-js-link'))",
        '<iframe src="http://evil.example/frame"></iframe>',
        "![tracker](http://evil.example/x.png)",
        '<img src="http://evil.example/y.png">',
        "![protocol relative](//evil.example/z.png)",
        '<a href="http://evil.example" onclick="console.log(\'PWNED-onclick\')">link</a>',
        "<svg onload=\"console.log('PWNED-svg')\"></svg>",
        "<style>body{background:url(http://evil.example/bg.png)}</style>",
        "```html\n<script>console.log('PWNED-code')</script>\n```",
        "Outro.",
    ]
)

CHECK_DOM = """() => {
    const body = [...document.querySelectorAll('.msg-assistant .msg-body')].at(-1);
    const bad = [];
    for (const el of body.querySelectorAll('*')) {
        for (const a of el.attributes) {
            if (a.name.startsWith('on')) bad.push(el.tagName + ' ' + a.name);
            if (/^\\s*javascript:/i.test(a.value)) bad.push(el.tagName + ' ' + a.name + ' js');
        }
    }
    for (const sel of ['script', 'iframe', 'object', 'embed', 'style', 'svg', 'form']) {
        if (body.querySelector(sel)) bad.push(sel);
    }
    for (const img of body.querySelectorAll('img')) bad.push('img ' + img.getAttribute('src'));
    for (const a of body.querySelectorAll('a')) {
        if (a.rel !== 'noopener noreferrer nofollow' || a.target !== '_blank') bad.push('a rel ' + a.href);
    }
    return bad;
}"""


def assert_nothing_ran(page, console, dialogs, requests, base):
    assert page.evaluate(CHECK_DOM) == []
    assert not [
        line for line in console if "PWNED" in line and "PWNED-free" not in line
    ], console
    assert dialogs == []
    hosts = {urlparse(u).hostname for u in requests}
    assert hosts <= {"127.0.0.1"}, hosts
    assert urlparse(base).hostname == "127.0.0.1"


def test_hostile_model_output_runs_nothing_and_loads_nothing_remote(
    page, site, console
):
    dialogs: list[str] = []
    requests: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("request", lambda r: requests.append(r.url))
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    # when the model answers with hostile markup, streamed in small pieces
    site.fake.configure(text=HOSTILE, chunk_chars=7, tps=60)
    send(page, "Say something nasty")

    # then while it streams nothing runs and nothing is fetched from elsewhere
    page.wait_for_function(
        "() => (document.querySelector('.msg-assistant .msg-body')?.innerText || '').includes('tracker')"
    )
    assert (
        page.evaluate("() => document.querySelector('.msg-assistant').dataset.status")
        == "streaming"
    )
    assert_nothing_ran(page, console, dialogs, requests, site.url)
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=20000)
    assert_nothing_ran(page, console, dialogs, requests, site.url)
    # the raw markup is shown as text, and the code block keeps its sample
    assert "<script>" in page.inner_text(".msg-assistant .msg-body")
    assert page.locator(".msg-assistant .code-block").count() == 1

    # and after a reload too; clicking the would-be javascript link does nothing
    reload(page)
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    assert_nothing_ran(page, console, dialogs, requests, site.url)
    for link in page.locator(".msg-assistant .msg-body a").all():
        assert link.get_attribute("href").startswith("http")
    page.wait_for_timeout(300)
    assert_nothing_ran(page, console, dialogs, requests, site.url)


def test_image_request_shows_the_image_and_the_download_is_a_png(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    send(page, "/image a red fox")

    img = page.wait_for_selector(".msg-assistant .msg-image img", timeout=30000)
    page.wait_for_function(
        "() => { const i = document.querySelector('.msg-assistant .msg-image img'); return i && i.complete && i.naturalWidth > 0; }"
    )
    assert img.get_attribute("src").startswith("/images/")
    href = page.get_attribute(".msg-assistant .img-download", "href")
    assert href.endswith("?download=1")
    response = page.request.get(site.url + href)
    assert response.status == 200
    assert response.headers["content-type"] == "image/png"
    assert "attachment" in response.headers.get("content-disposition", "")
    assert response.body()[:8] == b"\x89PNG\r\n\x1a\n"

    # and a download through the link itself works
    with page.expect_download() as info:
        page.click(".msg-assistant .img-download")
    assert info.value.suggested_filename.endswith(".png")
