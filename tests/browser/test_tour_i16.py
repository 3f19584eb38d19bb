"""Screenshots of what issue 16 changes (run on main for "before", on i16 for "after").
No assertions about the features: it must run on both."""

from __future__ import annotations

import os

import pytest

from conftest import PASSWORD
from conversations.models import Dialogue, Flag, Message
from tests.factories import DialogueFactory, UserFactory

from .conftest import log_in, send, wait_online

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PREFIX = os.environ.get("TOUR_PREFIX", "after")

MATH = r"""Euler's identity $e^{i\pi} + 1 = 0$ and the roots of $ax^2+bx+c=0$:

$$x = \frac{-b \pm \sqrt{b^2-4ac}}{2a}$$

Inline \(\alpha^2\) and display:

\[\int_0^1 x^2\,dx = \tfrac13\]

Code is never math: `$HOME` and

```bash
echo "$PATH costs $5"
```
"""

LONG = "\n\n".join(
    f"Paragraph {i}: " + "a sentence that goes on for a while, " * 6 for i in range(14)
)


def shot(page, artifacts, name):
    page.wait_for_timeout(250)
    page.screenshot(path=str(artifacts / f"{PREFIX}-{name}.png"))


def zh(page, site):
    page.context.add_cookies(
        [{"name": "django_language", "value": "zh-hans", "url": site.url}]
    )


def test_tour_page(page, site, artifacts):
    user = UserFactory(password=PASSWORD, username="ada")
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, site, user.username)

    # math + code labels
    site.fake.configure(text=MATH, tps=400)
    send(page, "Show me some maths")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    page.wait_for_timeout(800)
    shot(page, artifacts, "math")

    # rejected /image: actions of the last turn
    send(page, "/image")
    page.wait_for_timeout(1200)
    shot(page, artifacts, "rejected-image")

    # a long reply: jump button with the alert, scroll-to-start
    site.fake.configure(text=LONG, tps=400)
    send(page, "Write a lot")
    page.wait_for_selector(".msg-assistant[data-status=complete] >> nth=1")
    page.wait_for_timeout(500)
    page.evaluate("() => { const m = document.getElementById('messages'); m.scrollTop = m.scrollHeight - m.clientHeight - 300; }")
    send(page, "/image")
    page.wait_for_timeout(1200)
    shot(page, artifacts, "jump-alert")

    # streaming paragraphs
    site.fake.configure(text=LONG, tps=40)
    send(page, "Write a lot again")
    page.wait_for_timeout(3500)
    shot(page, artifacts, "streaming")
    page.wait_for_selector(".msg-assistant[data-status=complete] >> nth=2", timeout=60000)

    # search without matches, and with a markdown match
    page.fill("#dialogue-search", "zebra crossing")
    page.wait_for_timeout(900)
    shot(page, artifacts, "search-empty")
    page.fill("#dialogue-search", "roots")
    page.wait_for_timeout(900)
    shot(page, artifacts, "search-snippet")

    # a foreign dialogue
    other = UserFactory(password=PASSWORD)
    foreign = DialogueFactory(owner=other, title="Not yours")
    page.goto(f"{site.url}/d/{foreign.pk}/")
    page.wait_for_timeout(500)
    shot(page, artifacts, "not-found")


def test_tour_chinese(page, site, artifacts):
    user = UserFactory(password=PASSWORD, username="lin")
    zh(page, site)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page, site, user.username)
    site.fake.configure(text="你好！有什么可以帮你？", tps=200)
    send(page, "你好")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    send(page, "/image")
    page.wait_for_timeout(1200)
    shot(page, artifacts, "zh-phone")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="dark")
    page.reload()
    wait_online(page)
    page.wait_for_timeout(800)
    shot(page, artifacts, "zh-dark")


def test_tour_demo(page, daphne_factory, static_root, artifacts):
    server = daphne_factory(
        {
            "STATIC_ROOT": str(static_root),
            "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "",
            "DEMO_TOKENS_PER_SECOND": "0",
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000",
        }
    )

    class S:
        url = server.http_url

    user = UserFactory(password=PASSWORD, username="mei")
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, S, user.username)
    send(page, "Hello there! What can you do?")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    page.click("#new-dialogue")
    send(page, "/image a red bicycle")
    page.wait_for_selector(".msg-image img", timeout=30000)
    page.wait_for_timeout(1500)
    shot(page, artifacts, "demo-en")

    zh(page, S)
    page.goto(S.url + "/")
    wait_online(page)
    send(page, "你好，你能做什么？")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    page.click("#new-dialogue")
    send(page, "/image 一座黄昏的灯塔")
    page.wait_for_selector(".msg-image img", timeout=30000)
    page.wait_for_timeout(1500)
    shot(page, artifacts, "demo-zh")
    page.click(".dlg-item >> nth=1")
    page.wait_for_timeout(1500)
    shot(page, artifacts, "demo-zh-reply")

    # the admin, as a superuser at 1400 px
    staff = UserFactory(password=PASSWORD, username="admin", is_staff=True, is_superuser=True)
    for d in Dialogue.objects.all()[:1]:
        d.flagged = True
        d.save(update_fields=["flagged"])
        Flag.objects.create(dialogue=d, reason="check this", created_by=staff)
    # a regenerated reply
    d = Dialogue.objects.filter(owner=user).order_by("id").first()
    last = Message.objects.filter(dialogue=d, role="assistant").last()
    Message.objects.filter(pk=last.pk).update(replaced=True)
    Message.objects.create(dialogue=d, user=user, role="assistant", status="complete",
                           content="A second answer with $x^2$ math.", model="offline-demo")
    ctx = page.context
    ctx.clear_cookies()
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(S.url + "/admin/login/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.goto(S.url + "/admin/conversations/dialogue/")
    shot(page, artifacts, "admin-dialogues")
    page.goto(S.url + f"/admin/conversations/dialogue/{d.pk}/change/")
    page.wait_for_timeout(800)
    page.screenshot(path=str(artifacts / f"{PREFIX}-admin-transcript.png"), full_page=True)
    page.goto(S.url + "/admin/conversations/transcriptview/")
    shot(page, artifacts, "admin-audit")
    page.goto(S.url + "/admin/imaging/generatedimage/")
    shot(page, artifacts, "admin-images")
