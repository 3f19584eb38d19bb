"""The chat page as a demanding user tries it (issue 16): a refused send keeps the
last turn's actions, Chinese fits, searches and missing dialogues say what happened,
nothing jumps or hides behind "Jump to the newest", math renders (and never in
code), replies copy as Markdown, code blocks name their language, long replies offer
a way back to their start."""

from __future__ import annotations

import re

import pytest

from conftest import PASSWORD
from conversations.models import Message
from tests.factories import DialogueFactory, MessageFactory, UserFactory

from .conftest import log_in, send, wait_hydrated, wait_online

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MATH = r"""Euler: $e^{i\pi} + 1 = 0$, and the roots of $ax^2+bx+c=0$ are

$$x = \frac{-b \pm \sqrt{b^2-4ac}}{2a}$$

Also \(\alpha_1^2\) and

\[\int_0^1 x^2\,dx = \tfrac13\]

It costs $5 and $10. Code is never math: `$HOME` and

```bash
echo "$PATH is $x$"
```
"""

PARAGRAPHS = "\n\n".join(
    f"Paragraph {i}: " + "words that keep the line going for a while, " * 3
    for i in range(8)
)

CODE = """Two blocks:

```python
print("hi")
```

```
no language here
```
"""


def visible_box(page, selector: str) -> dict | None:
    return page.locator(selector).bounding_box()


def zh(page, site) -> None:
    page.context.add_cookies(
        [{"name": "django_language", "value": "zh-hans", "url": site.url}]
    )


# --- 1. A refused send ---------------------------------------------------------------


def test_a_refused_send_keeps_regenerate_and_edit_on_the_last_turn(page, site):
    # given a finished exchange
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Hello [[fake tokens=5]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    page.wait_for_selector(".msg-assistant .msg-regenerate:visible")

    # when a bare /image is refused by the server
    send(page, "/image")
    page.wait_for_selector("#composer-alerts .alert")

    # then the last reply can still be regenerated and the last message edited
    assert page.locator(".msg-user").count() == 1
    assert page.locator(".msg-assistant .msg-regenerate").is_visible()
    assert page.locator(".msg-user .msg-edit").is_visible()


# --- 2. Chinese ----------------------------------------------------------------------


def test_in_chinese_on_a_phone_send_fits_and_the_refusal_is_chinese(page, site):
    user = UserFactory(password=PASSWORD)
    zh(page, site)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, site, user.username)

    # the button keeps "发送" on one line: no taller than the one-line message box
    button = visible_box(page, "#send-button")
    box = visible_box(page, "#composer-input")
    assert page.inner_text("#send-button") == "发送"
    assert button["height"] <= box["height"] + 1
    assert button["width"] > button["height"]
    # and so do the header's buttons
    for selector in ("#open-settings", "#open-share"):
        header = visible_box(page, selector)
        assert header["width"] > header["height"], selector

    # the server's refusal of a bare /image reads in Chinese
    send(page, "/image")
    page.wait_for_selector("#composer-alerts .alert")
    assert page.inner_text("#composer-alerts .alert-text") == (
        "请在 /image 后面描述你想要的图片。"
    )
    # a refusal the server words only in English shows the page's own Chinese text
    page.click("#composer-alerts .btn-close")
    page.wait_for_selector("#composer-alerts .alert", state="detached")
    page.fill("#composer-input", "x" * 32_001)
    page.keyboard.press("Enter")
    page.wait_for_selector("#composer-alerts .alert")
    assert page.inner_text("#composer-alerts .alert-text") == "消息太长了。"


# --- 3. Search -------------------------------------------------------------------------


def test_a_search_without_matches_says_so_and_snippets_read_as_text(page, site):
    user = UserFactory(password=PASSWORD)
    dialogue = DialogueFactory(owner=user, title="Plants")
    MessageFactory(
        dialogue=dialogue,
        role="assistant",
        content="An introduction that goes on for quite a while before it says "
        "that **watering** the `ficus` weekly is enough.",
    )
    log_in(page, site, user.username)
    page.wait_for_selector(".dlg-item")

    page.fill("#dialogue-search", "zebra crossing")
    page.wait_for_selector("#dialogue-no-match:visible")
    assert page.locator("#dialogue-empty").is_hidden()
    assert page.inner_text("#dialogue-no-match") == "No dialogue matches your search."

    page.fill("#dialogue-search", "ficus")
    page.wait_for_selector(".dlg-snippet:visible")
    snippet = page.inner_text(".dlg-snippet")
    assert snippet.startswith("…") and "watering the ficus weekly" in snippet
    assert "*" not in snippet and "`" not in snippet
    assert page.locator("#dialogue-no-match").is_hidden()


# --- 4. Missing dialogues --------------------------------------------------------------


def test_a_foreign_dialogue_url_shows_a_page_with_a_way_back(page, site):
    user = UserFactory(password=PASSWORD)
    foreign = DialogueFactory(owner=UserFactory(), title="Not yours")
    log_in(page, site, user.username)

    response = page.goto(f"{site.url}/d/{foreign.pk}/")

    assert response.status == 404
    assert "Not yours" not in page.content()
    page.click("text=Back to your dialogues")
    page.wait_for_url(f"{site.url}/")
    wait_online(page)


# --- 5. Layout while streaming and with alerts -------------------------------------


def test_streaming_paragraphs_keep_their_gaps_and_do_not_move_when_done(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    site.fake.configure(text=PARAGRAPHS, tps=30)
    send(page, "Write paragraphs")

    # mid-stream: at least four paragraphs on screen
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant .msg-body p').length >= 4"
    )
    measure = """() => [...document.querySelectorAll('.msg-assistant .msg-body p')]
        .map((p) => [p.innerText.slice(0, 12), Math.round(p.getBoundingClientRect().top
            - document.querySelector('.msg-assistant').getBoundingClientRect().top),
            Math.round(p.getBoundingClientRect().bottom
            - document.querySelector('.msg-assistant').getBoundingClientRect().top)])"""
    during = page.evaluate(measure)
    assert page.get_attribute(".msg-assistant", "data-status") == "streaming"
    gaps = [b[1] - a[2] for a, b in zip(during, during[1:], strict=False)]
    assert min(gaps) >= 10, gaps

    # when it completes, the paragraphs seen during the stream stay where they were
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=60000)
    after = {text: top for text, top, _ in page.evaluate(measure)}
    for text, top, _ in during[:-1]:  # the last one may still have been growing
        assert after[text] == top, (text, top, after[text])


def test_jump_to_the_newest_never_covers_the_last_message_when_an_alert_shows(
    page, site
):
    # given a dialogue scrolled to its newest message
    user = UserFactory(password=PASSWORD)
    dialogue = DialogueFactory(owner=user)
    for i in range(6):
        MessageFactory(dialogue=dialogue, content=f"Question {i}")
        MessageFactory(
            dialogue=dialogue,
            role="assistant",
            content=f"Answer {i}\n\n" + "text " * 80,
        )
    log_in(page, site, user.username)
    page.goto(f"{site.url}/d/{dialogue.pk}/")
    wait_hydrated(page)

    # when a refused send puts an alert above the composer, and the pane scrolls
    send(page, "/image")
    page.wait_for_selector("#composer-alerts .alert")
    page.wait_for_timeout(300)
    page.dispatch_event("#messages", "scroll")
    page.wait_for_timeout(200)

    # then the last message is fully in view and nothing floats over it
    pane = visible_box(page, "#messages")
    last = visible_box(page, ".msg-assistant >> nth=-1")
    assert last["y"] + last["height"] <= pane["y"] + pane["height"] + 1
    if page.locator("#jump-bottom").is_visible():
        jump = visible_box(page, "#jump-bottom")
        assert jump["y"] >= last["y"] + last["height"]


# --- 10. Math ------------------------------------------------------------------------


def test_math_renders_with_katex_never_in_code_under_the_strict_policy(
    page, site, console
):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    site.fake.configure(text=MATH, tps=300)
    send(page, "Some maths")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    reply = page.locator(".msg-assistant .msg-body")
    assert reply.locator(".math-tex.math-rendered").count() == 5
    assert reply.locator(".katex-display").count() == 2
    assert reply.locator(".katex-error").count() == 0
    # the fraction is laid out (KaTeX's inline sizes applied, not refused by the CSP)
    assert reply.locator(".katex .mfrac").count() == 2  # \frac and \tfrac
    heights = page.evaluate(
        "() => [...document.querySelectorAll('.msg-assistant .katex-html .katex-strut')]"
        ".map((s) => s.style.height).filter(Boolean).length"
    )
    assert heights > 0
    # code and dollar amounts stay text
    assert reply.locator("code", has_text="$HOME").count() == 1
    assert "$PATH is $x$" in reply.locator("pre code").inner_text()
    assert "It costs $5 and $10." in reply.inner_text()
    assert not [line for line in console if "Content Security Policy" in line]


def test_math_from_a_model_cannot_link_or_style_its_way_out(page, site, console):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    hostile = (
        r"$\href{javascript:alert(1)}{click}$ and $\url{https://evil.example}$ and "
        r"$\htmlStyle{position:fixed;top:0}{x}$ and $\includegraphics{https://evil.example/a.png}$"
    )
    site.fake.configure(text=hostile, tps=300)
    send(page, "Hostile maths")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    reply = page.locator(".msg-assistant .msg-body")
    assert reply.locator("a").count() == 0
    assert reply.locator("img").count() == 0
    fixed = page.evaluate(
        "() => [...document.querySelectorAll('.msg-body *')]"
        ".filter((e) => getComputedStyle(e).position === 'fixed').length"
    )
    assert fixed == 0
    assert not [line for line in console if "evil.example" in line]


def test_math_is_drawn_in_the_first_paint_and_in_the_admin_transcript(page, site):
    # given a stored reply with math
    user = UserFactory(password=PASSWORD, is_staff=True, is_superuser=True)
    dialogue = DialogueFactory(owner=user, title="Maths")
    MessageFactory(dialogue=dialogue, content="Show me")
    MessageFactory(dialogue=dialogue, role="assistant", content=MATH)
    log_in(page, site, user.username)
    page.route_web_socket(re.compile(r".*/ws/chat/"), lambda ws: None)

    # the server's first paint, before the socket says anything
    page.goto(f"{site.url}/d/{dialogue.pk}/")
    first = page.locator(".msg[data-first-paint] .msg-body")
    first.locator(".math-rendered").first.wait_for()
    assert first.locator(".math-tex.math-rendered").count() == 5
    assert first.locator(".code-lang").inner_text() == "bash"
    assert "$PATH is $x$" in first.locator("pre code").inner_text()

    # and the admin's transcript
    page.goto(f"{site.url}/admin/conversations/dialogue/{dialogue.pk}/change/")
    transcript = page.locator(".field-text >> nth=1")
    transcript.locator(".math-rendered").first.wait_for()
    assert transcript.locator(".math-tex.math-rendered").count() == 5
    assert transcript.locator(".katex-display").count() == 2


# --- 11. Copy as Markdown, code labels, back to a reply's start ---------------------


def test_copy_as_markdown_and_as_text(page, site):
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=site.url
    )
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    source = (
        "A **bold** claim with $x^2$:\n\n- one\n- two\n\n```python\nprint(1)\n```\n"
    )
    site.fake.configure(text=source, tps=300)
    send(page, "Format something")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    page.click(".msg-assistant .msg-copy-md")
    assert page.evaluate("() => navigator.clipboard.readText()") == source
    assert page.locator(".msg-user .msg-copy-md").is_hidden()

    page.click(".msg-assistant .msg-copy")
    # the copy is asynchronous: wait for the button to say it is done
    page.wait_for_selector(".msg-assistant .msg-copy:has-text('Copied')")
    text = page.evaluate("() => navigator.clipboard.readText()")
    assert text.startswith("A bold claim with $x^2$:")
    assert "**" not in text and "```" not in text and "Copy code" not in text
    assert "print(1)" in text and "one" in text


def test_every_code_block_shows_its_language_even_while_streaming(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    site.fake.configure(text=CODE + "\n\nAnd more. " * 60, tps=60)
    send(page, "Code please")

    page.wait_for_selector(".msg-assistant[data-status=streaming] .code-lang")
    labels = page.locator(".msg-assistant .code-lang")
    assert labels.first.is_visible() and labels.first.inner_text() == "python"

    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=60000)
    assert [labels.nth(i).inner_text() for i in range(labels.count())] == [
        "python",
        "plain text",
    ]
    assert all(labels.nth(i).is_visible() for i in range(labels.count()))


def test_a_long_reply_offers_a_way_back_to_its_start(page, site):
    user = UserFactory(password=PASSWORD)
    page.set_viewport_size({"width": 1280, "height": 700})
    log_in(page, site, user.username)
    site.fake.configure(text="Short answer.", tps=300)
    send(page, "Short")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    site.fake.configure(text=PARAGRAPHS * 3, tps=2000)
    send(page, "Long")
    page.wait_for_selector(".msg-assistant[data-status=complete] >> nth=1")

    short, long = (
        page.locator(".msg-assistant").nth(0),
        page.locator(".msg-assistant").nth(1),
    )
    assert short.locator(".msg-top").is_hidden()
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant')[1].hasAttribute('data-long')"
    )
    long.locator(".msg-top").click()
    page.wait_for_function(
        """() => {
            const pane = document.getElementById('messages').getBoundingClientRect();
            const reply = document.querySelectorAll('.msg-assistant')[1].getBoundingClientRect();
            return Math.abs(reply.top - pane.top) < 24;
        }"""
    )
    assert page.evaluate("() => document.activeElement.classList.contains('msg')")
    assert Message.objects.filter(role="assistant").count() == 2
