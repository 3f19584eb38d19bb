"""The chat page end to end: sign-up, streaming, resume, stop, regenerate, edit."""

from __future__ import annotations

import re

import pytest

from conftest import PASSWORD
from conversations.models import Dialogue, Message
from tests.factories import UserFactory

from .conftest import log_in, reload, reply_text, send, wait_online

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def tokens(n: int) -> str:
    return " ".join(f"tok{i}" for i in range(n))


def test_sign_up_log_in_send_see_it_stream_and_stored_after_reload(page, site, console):
    # given a new visitor signs up through the form, logs out and logs back in
    page.goto(f"{site.url}/accounts/signup/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password1]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("form button[type=submit]")
    wait_online(page)
    page.click("text=Log out")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))
    log_in(page, site, "ada")

    # when they send a message answered slowly
    send(page, "Hello [[fake tokens=60 tps=40]]")

    # then the reply streams in: seen unfinished, then complete
    page.wait_for_selector(".msg-assistant[data-status=streaming]")
    page.wait_for_function(
        "() => (document.querySelector('.msg-assistant .msg-body')?.innerText || '').includes('tok5')"
    )
    assert "tok59" not in reply_text(page)
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=15000)
    assert reply_text(page) == tokens(60)
    assert page.locator("#stop-button").is_hidden()

    # and after a reload it is still there, stored
    reload(page)
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    assert reply_text(page) == tokens(60)
    assert page.inner_text(".msg-user .msg-body") == "Hello [[fake tokens=60 tps=40]]"
    stored = Message.objects.get(role="assistant")
    assert stored.content == tokens(60)
    assert stored.dialogue.owner.username == "ada"
    assert not [line for line in console if line.startswith(("error", "pageerror"))], (
        console
    )


def test_switching_dialogues_mid_stream_and_back_shows_the_whole_reply(page, site):
    # given a user with an earlier dialogue
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "First [[fake tokens=5]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    first_path = page.evaluate("() => location.pathname")

    # and a second dialogue whose reply is streaming
    page.click("#new-dialogue")
    send(page, "Second [[fake tokens=150 tps=50]]")
    page.wait_for_function(
        "() => (document.querySelector('.msg-assistant .msg-body')?.innerText || '').includes('tok10')"
    )
    second_path = page.evaluate("() => location.pathname")

    # when the user switches to the first dialogue mid-stream and back
    page.click(f".dlg-link[href='{first_path}']")
    page.wait_for_function(
        "() => document.querySelector('.msg-user .msg-body')?.innerText.startsWith('First')"
    )
    page.wait_for_timeout(500)
    page.click(f".dlg-link[href='{second_path}']")

    # then the reply is there and ends complete with exactly the upstream text
    page.wait_for_function(
        "() => document.querySelector('.msg-user .msg-body')?.innerText.startsWith('Second')"
    )
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=15000)
    assert reply_text(page) == tokens(150)
    assert Message.objects.filter(role="assistant", content=tokens(150)).count() == 1


def test_reload_mid_stream_resumes_and_ends_with_the_upstream_text(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Go [[fake tokens=150 tps=50]]")
    page.wait_for_function(
        "() => (document.querySelector('.msg-assistant .msg-body')?.innerText || '').includes('tok10')"
    )

    reload(page)

    page.wait_for_selector(".msg-assistant")
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=15000)
    assert reply_text(page) == tokens(150)
    assert page.locator(".msg-user").count() == 1
    assert Message.objects.get(role="assistant").content == tokens(150)


def test_stop_keeps_exactly_the_text_shown(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Long one [[fake tokens=600 tps=30]]")
    page.wait_for_function(
        "() => (document.querySelector('.msg-assistant .msg-body')?.innerText || '').includes('tok20')"
    )

    # when the user presses stop, reading the screen in the same task
    shown = page.evaluate(
        """() => {
            const text = document.querySelector('.msg-assistant .msg-body').innerText.trim();
            document.getElementById('stop-button').click();
            return text;
        }"""
    )

    # then the reply ends stopped with exactly that text, on screen and stored
    page.wait_for_selector(".msg-assistant[data-status=stopped]", timeout=10000)
    assert reply_text(page) == shown
    stored = Message.objects.get(role="assistant")
    assert stored.status == Message.Status.STOPPED
    assert stored.content == shown
    assert "tok599" not in shown


def test_escape_stops_and_regenerate_and_edit_work(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Tell me [[fake tokens=8]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    # regenerate answers the same user message again; the old answer is replaced
    site.fake.configure(text="A fresh answer")
    page.click(".msg-assistant .msg-regenerate")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.msg-assistant:not(.d-none)')].at(-1)?.innerText.includes('A fresh answer')"
    )
    page.wait_for_selector(
        ".msg-assistant:not(.d-none)[data-status=complete] >> text=A fresh answer"
    )
    assert page.locator(".msg-assistant:not(.d-none)").count() == 1

    # edit the last message: the new text is sent and answered, the old turn replaced
    site.fake.configure(text=None)
    page.click(".msg-user:not(.d-none) .msg-edit")
    assert page.input_value("#composer-input") == "Tell me [[fake tokens=8]]"
    page.fill("#composer-input", "Tell me more [[fake tokens=4]]")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.msg-assistant:not(.d-none)')].at(-1)?.innerText.includes('tok3')"
    )
    page.wait_for_selector(".msg-assistant:not(.d-none)[data-status=complete]")
    assert page.locator(".msg-user:not(.d-none)").all_inner_texts() == [
        "You\n\nTell me more [[fake tokens=4]]"
    ] or [
        t.strip().endswith("Tell me more [[fake tokens=4]]")
        for t in page.locator(".msg-user:not(.d-none) .msg-body").all_inner_texts()
    ] == [True]
    dialogue = Dialogue.objects.get(owner=user)
    live = dialogue.messages.filter(replaced=False).order_by("id")
    assert [m.content for m in live] == ["Tell me more [[fake tokens=4]]", tokens(4)]

    # Esc stops a streaming reply
    send(page, "Again [[fake tokens=500 tps=20]]")
    page.wait_for_selector(".msg-assistant[data-status=streaming]")
    page.wait_for_timeout(400)
    page.locator("#messages").focus()
    page.keyboard.press("Escape")
    page.wait_for_selector(".msg-assistant[data-status=stopped]", timeout=10000)

    # and the reload shows the same, replaced turns hidden
    reload(page)
    page.wait_for_selector(".msg-assistant[data-status=stopped]")
    assert page.locator(".msg-user:not(.d-none)").count() == 2


def test_message_typed_offline_is_sent_once_when_back(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Warm up [[fake tokens=3]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    # when the connection drops and the user sends while offline
    page.context.set_offline(True)
    page.evaluate("() => window.dispatchEvent(new Event('offline'))")
    page.wait_for_selector("#conn-state[data-state=offline]", timeout=15000)
    send(page, "Sent while offline [[fake tokens=4]]")
    page.wait_for_selector(".msg-queued")
    page.context.set_offline(False)

    # then it is sent once when back, shown once, answered once
    wait_online(page)
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant[data-status=complete]').length === 2",
        timeout=20000,
    )
    assert page.locator(".msg-user").count() == 2
    assert (
        Message.objects.filter(content="Sent while offline [[fake tokens=4]]").count()
        == 1
    )
    reload(page)
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant[data-status=complete]').length === 2"
    )
    assert page.locator(".msg-user").count() == 2


def test_refused_message_shows_an_alert_and_gives_the_text_back(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    too_long = "x" * 32_001

    page.fill("#composer-input", too_long)
    page.keyboard.press("Enter")

    page.wait_for_selector("#composer-alerts .alert-warning")
    assert page.input_value("#composer-input") == too_long
    assert page.locator(".msg-user").count() == 0
    assert not Message.objects.exists()
    page.click("#composer-alerts .btn-close")
    page.wait_for_selector("#composer-alerts .alert", state="detached")


def test_a_cut_off_reply_says_so_and_continue_goes_on_in_the_same_message(
    page, daphne_factory, fake_openai, static_root
):
    from conftest import fake_openai_env

    from .conftest import Site

    # given a site whose replies may write at most 5 tokens
    fake_openai.configure(tps=200)
    server = daphne_factory(
        {
            **fake_openai_env(fake_openai),
            "STATIC_ROOT": str(static_root),
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000",
            "CHAT_MAX_REPLY_TOKENS": "5",
        }
    )
    site = Site(url=server.http_url, daphne=server, fake=fake_openai)
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    # when a reply is cut at that limit
    send(page, "Tell me all [[fake tokens=9]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    # then its text stays, the page says it was cut off and offers Continue
    assert reply_text(page) == tokens(5)
    assert page.locator(".msg-assistant .msg-cut").is_visible()
    continue_button = page.locator(".msg-assistant .msg-continue")
    assert continue_button.is_visible()
    assert page.locator(".msg-assistant:not(.d-none)").count() == 1

    # when Continue is pressed, the same message grows (the model goes on)
    continue_button.click()
    page.wait_for_function(
        "() => (document.querySelector('.msg-assistant .msg-body')?.innerText || '')"
        ".split(/\\s+/).length > 5"
    )
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    assert page.locator(".msg-assistant:not(.d-none)").count() == 1
    stored = Message.objects.get(role="assistant")
    assert stored.content.startswith(tokens(5))
    assert len(stored.content.split()) > 5
