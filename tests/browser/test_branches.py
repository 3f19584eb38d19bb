"""Branches in the chat page: regenerate and edit make versions, `‹ 1 / 2 ›` switches
between them at once, on this device and on another one, and a reload keeps them."""

from __future__ import annotations

import pytest

from conftest import PASSWORD
from conversations.models import Dialogue
from tests.factories import UserFactory

from .conftest import log_in, reload, send, wait_hydrated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOWN = "#message-list .msg:not(.d-none)"


def shown_texts(page) -> list[str]:
    return [t.strip() for t in page.locator(f"{SHOWN} .msg-body").all_inner_texts()]


def position(page, role: str) -> str:
    return page.inner_text(f"{SHOWN}.msg-{role} .msg-branch-pos").strip()


def test_switch_branches_here_and_on_another_device(browser, page, site, console):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    site.fake.configure(text="First answer")
    send(page, "Name a bird")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    # when the reply is regenerated, then the page shows 2 / 2 on the new answer
    site.fake.configure(text="Second answer")
    page.click(f"{SHOWN}.msg-assistant .msg-regenerate")
    page.wait_for_selector(
        f"{SHOWN}.msg-assistant[data-status=complete] >> text=Second answer"
    )
    assert position(page, "assistant") == "2 / 2"

    # when the question is edited, then it shows 2 / 2 with its own answer
    site.fake.configure(text="Fish answer")
    page.click(f"{SHOWN}.msg-user .msg-edit")
    page.fill("#composer-input", "Name a fish")
    page.keyboard.press("Enter")
    page.wait_for_selector(
        f"{SHOWN}.msg-assistant[data-status=complete] >> text=Fish answer"
    )
    assert shown_texts(page) == ["Name a fish", "Fish answer"]
    assert position(page, "user") == "2 / 2"
    assert page.locator(f"{SHOWN}.msg-assistant .msg-branches").is_hidden()

    # and another device shows the same branch
    other_context = browser.new_context()
    other = other_context.new_page()
    log_in(other, site, user.username)
    dialogue = Dialogue.objects.get(owner=user)
    other.goto(f"{site.url}/d/{dialogue.pk}/")
    wait_hydrated(other)
    assert shown_texts(other) == ["Name a fish", "Fish answer"]

    # when the first wording is chosen here, both devices show it with its newest answer
    page.click(f"{SHOWN}.msg-user .msg-branch-prev")
    page.wait_for_selector(f"{SHOWN}.msg-user >> text=Name a bird")
    assert shown_texts(page) == ["Name a bird", "Second answer"]
    assert position(page, "user") == "1 / 2"
    other.wait_for_selector(f"{SHOWN}.msg-user >> text=Name a bird")
    assert shown_texts(other) == ["Name a bird", "Second answer"]

    # and the first answer on the other device: here too
    other.click(f"{SHOWN}.msg-assistant .msg-branch-prev")
    other.wait_for_selector(f"{SHOWN}.msg-assistant >> text=First answer")
    page.wait_for_selector(f"{SHOWN}.msg-assistant >> text=First answer")
    assert position(page, "assistant") == "1 / 2"

    # then the model continues from the chosen branch, and a reload keeps it
    site.fake.configure(text=None, echo=True)
    send(page, "And a bigger one?")
    page.wait_for_function(
        "() => document.querySelectorAll('#message-list .msg-assistant:not(.d-none)[data-status=complete]').length === 2"
    )
    request = [r["body"] for r in site.fake.requests if r["body"].get("stream")][-1]
    said = [m["content"] for m in request["messages"] if m["role"] != "system"]
    assert said == ["Name a bird", "First answer", "And a bigger one?"]
    reload(page)
    assert shown_texts(page)[:2] == ["Name a bird", "First answer"]
    assert position(page, "assistant") == "1 / 2"
    other_context.close()
    assert not [line for line in console if line.startswith("pageerror")], console
