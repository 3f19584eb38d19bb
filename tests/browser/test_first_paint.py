"""/d/<id>/ shows the transcript from the server, then the live page takes over."""

from __future__ import annotations

import re

import pytest

from conftest import PASSWORD
from conversations.models import Dialogue, Message
from tests.factories import UserFactory

from .conftest import log_in, reload, wait_hydrated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Counts the messages in the list after every DOM change (before the next paint):
# a blank frame between the server's render and the live one would record a drop.
WATCH_LIST = """
window.__listCounts = [];
new MutationObserver(() => {
    const list = document.getElementById('message-list');
    if (list) window.__listCounts.push(list.querySelectorAll('.msg').length);
}).observe(document, {childList: true, subtree: true});
"""


def make_dialogue(user, title: str, turns: int) -> Dialogue:
    dialogue = Dialogue.objects.create(owner=user, title=title)
    for i in range(turns):
        Message.objects.create(
            dialogue=dialogue, user=user, role="user", content=f"{title} question {i}"
        )
        Message.objects.create(
            dialogue=dialogue,
            user=user,
            role="assistant",
            model="fake-model",
            content=f"{title} **answer {i}**\n\n![pixel](http://evil.example/{i}.png)",
        )
    return dialogue


def visible_ids(page) -> list[str]:
    return page.evaluate(
        "() => [...document.querySelectorAll('#message-list .msg:not(.d-none)')]"
        ".map(el => el.dataset.id)"
    )


def test_the_transcript_shows_without_javascript(browser, site):
    # given a user with a dialogue of three turns
    user = UserFactory(password=PASSWORD)
    dialogue = make_dialogue(user, "Birds", 3)
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # when they log in and open its link with JavaScript off
    page.goto(f"{site.url}/accounts/login/?next=/d/{dialogue.pk}/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    # (the language form's no-script "Switch" button is a submit button too)
    page.click("form[action='/accounts/login/'] button[type=submit]")
    page.wait_for_url(f"{site.url}/d/{dialogue.pk}/")

    # then every message is there, in order, rendered, and the title is the dialogue's
    texts = page.locator("#message-list .msg .msg-body").all_inner_texts()
    assert [t.strip() for t in texts] == [
        line
        for i in range(3)
        for line in (f"Birds question {i}", f"Birds answer {i}\n\nimage: pixel")
    ]
    assert page.locator(".msg-assistant .msg-body strong").count() == 3
    assert page.inner_text("#dialogue-title") == "Birds"
    assert page.title() == "Birds · chatsite"
    assert page.locator("#empty-state").is_hidden()
    assert page.locator(".noscript-note").is_visible()
    # and the remote images in the replies were never loaded
    assert not [u for u in requests if "evil.example" in u]
    context.close()


def test_with_javascript_each_message_shows_once_and_never_blank(page, site, console):
    # given a user with a dialogue and the list watched from the first byte
    user = UserFactory(password=PASSWORD)
    dialogue = make_dialogue(user, "Cats", 4)
    expected = [
        str(pk) for pk in dialogue.messages.order_by("id").values_list("pk", flat=True)
    ]
    log_in(page, site, user.username)
    page.add_init_script(WATCH_LIST)

    # when the deep link is opened and the socket connects
    page.goto(f"{site.url}/d/{dialogue.pk}/")
    wait_hydrated(page)

    # then each message is shown exactly once, by the live page
    assert visible_ids(page) == expected
    assert page.locator(".msg[data-first-paint]").count() == 0
    assert page.inner_text("#dialogue-title") == "Cats"
    # and the list never went blank or doubled between the two renders
    counts = page.evaluate("() => window.__listCounts")
    first_full = counts.index(len(expected))
    assert set(counts[first_full:]) == {len(expected)}, counts
    assert page.evaluate("() => location.pathname") == f"/d/{dialogue.pk}/"
    assert not [line for line in console if line.startswith(("error", "pageerror"))]


def test_the_address_follows_the_open_dialogue(page, site):
    # given two dialogues
    user = UserFactory(password=PASSWORD)
    first = make_dialogue(user, "First", 1)
    second = make_dialogue(user, "Second", 1)
    log_in(page, site, user.username)
    page.goto(f"{site.url}/d/{first.pk}/")
    wait_hydrated(page)

    page.evaluate("() => { window.__samePage = true; }")

    # when the user switches to the other one in the sidebar
    page.click(f".dlg-link[href='/d/{second.pk}/']")

    # then the address names it and its messages show
    page.wait_for_url(f"{site.url}/d/{second.pk}/")
    page.wait_for_function(
        "() => document.querySelector('.msg-user .msg-body')?.innerText === 'Second question 0'"
    )

    # when they go back, the first one is open again
    page.go_back()
    page.wait_for_url(f"{site.url}/d/{first.pk}/")
    page.wait_for_function(
        "() => document.querySelector('.msg-user .msg-body')?.innerText === 'First question 0'"
    )
    assert page.inner_text("#dialogue-title") == "First"
    assert page.evaluate("() => window.__samePage") is True  # no page load

    # and a reload reopens the same dialogue, each message once
    reload(page)
    assert page.url == f"{site.url}/d/{first.pk}/"
    assert len(visible_ids(page)) == 2
    assert page.inner_text(".msg-user .msg-body") == "First question 0"

    # and "new dialogue" goes back to the bare page
    page.click("#new-dialogue")
    page.wait_for_url(re.compile(re.escape(site.url) + r"/$"))
    assert page.locator("#message-list .msg").count() == 0


def test_an_old_query_link_lands_on_the_dialogue_address(page, site):
    user = UserFactory(password=PASSWORD)
    dialogue = make_dialogue(user, "Legacy", 1)
    log_in(page, site, user.username)

    page.goto(f"{site.url}/?d={dialogue.pk}")
    wait_hydrated(page)

    assert page.url == f"{site.url}/d/{dialogue.pk}/"
    assert page.inner_text(".msg-user .msg-body") == "Legacy question 0"


def test_the_server_transcript_shows_while_the_socket_has_said_nothing(page, site):
    # given a dialogue, and a socket that connects but never answers
    user = UserFactory(password=PASSWORD)
    dialogue = make_dialogue(user, "Quiet", 2)
    log_in(page, site, user.username)
    sent: list[str] = []
    page.route_web_socket(
        re.compile(r".*/ws/chat/"), lambda ws: ws.on_message(lambda m: sent.append(m))
    )

    # when the deep link is opened
    page.goto(f"{site.url}/d/{dialogue.pk}/")
    page.wait_for_function(
        "() => document.getElementById('messages').dataset.loading === 'true'"
    )

    # then the server's render is on screen, scrolled to the newest, while the page
    # waits for the dialogue's state
    assert any('"dialogue.open"' in frame for frame in sent)
    assert page.locator("#message-list .msg[data-first-paint]").count() == 4
    assert page.locator("#empty-state").is_hidden()
    assert page.inner_text("#dialogue-title") == "Quiet"
    assert page.inner_text(".msg-assistant .msg-body strong >> nth=-1") == "answer 1"
