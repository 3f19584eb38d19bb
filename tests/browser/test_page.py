"""The page around the messages: sidebar actions, settings, languages, themes,
shortcuts, and the screenshots committed under docs/screenshots."""

from __future__ import annotations

import pytest

from conftest import PASSWORD
from conversations.models import Dialogue
from tests.factories import DialogueFactory, UserFactory

from .conftest import log_in, reload, send, wait_online

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SHOWCASE = """Here is a small **Python** example that counts words:

```python
from collections import Counter

def top_words(text: str, n: int = 3) -> list[tuple[str, int]]:
    return Counter(text.lower().split()).most_common(n)
```

- It splits on whitespace
- It ignores case

| word | count |
|------|------:|
| the  | 12 |
| fox  | 3 |

The top word's share is $p = \\frac{12}{15} = 0.8$.
"""


def test_sidebar_pages_renames_pins_searches_and_deletes(page, site):
    user = UserFactory(password=PASSWORD)
    for i in range(35):
        DialogueFactory(owner=user, title=f"Topic {i:02d}")
    log_in(page, site, user.username)

    # pages: the first 30, then more on scroll
    page.wait_for_function("() => document.querySelectorAll('.dlg-item').length >= 30")
    page.locator("#dialogue-sentinel").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelectorAll('.dlg-item').length === 35")

    # rename inline
    item = page.locator(".dlg-item", has_text="Topic 03")
    item.locator(".dlg-menu-button").click()
    item.locator("[data-action=rename]").click()
    page.fill(".dlg-rename", "Renamed topic")
    page.keyboard.press("Enter")
    page.wait_for_selector(".dlg-item >> text=Renamed topic")
    assert Dialogue.objects.get(owner=user, title="Renamed topic").title_set_by_user

    # pin: it moves to the top
    item = page.locator(".dlg-item", has_text="Renamed topic")
    item.locator(".dlg-menu-button").click()
    item.locator("[data-action=pin]").click()
    page.wait_for_function(
        "() => document.querySelector('.dlg-item').innerText.includes('Renamed topic')"
    )
    assert page.locator(".dlg-item").first.get_attribute("class").count("pinned") == 1

    # search (Ctrl+K focuses it)
    page.locator("body").click()
    page.keyboard.press("Control+k")
    assert page.evaluate("() => document.activeElement.id") == "dialogue-search"
    page.keyboard.type("Topic 1")
    page.wait_for_function("() => document.querySelectorAll('.dlg-item').length === 10")
    page.fill("#dialogue-search", "")
    page.wait_for_function("() => document.querySelectorAll('.dlg-item').length >= 30")

    # delete asks first
    item = page.locator(".dlg-item", has_text="Renamed topic")
    item.locator(".dlg-menu-button").click()
    item.locator("[data-action=delete]").click()
    page.wait_for_selector("#delete-modal.show")
    page.click("#delete-confirm")
    page.wait_for_selector(".dlg-item >> text=Renamed topic", state="detached")
    assert not Dialogue.objects.filter(title="Renamed topic").exists()


def test_settings_panel_shows_models_context_and_usage(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Hi [[fake tokens=5]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")

    page.click("#open-settings")
    page.wait_for_selector("#settings.show")
    page.wait_for_function(
        "() => document.querySelectorAll('#settings-model option').length >= 2"
    )
    assert "tokens" in page.inner_text("#context-label")
    page.wait_for_function(
        "() => document.getElementById('usage-messages').innerText !== '–'"
    )

    page.select_option("#settings-model", "fake-small")
    page.fill("#settings-system", "Answer like a pirate.")
    page.click("#settings-form button[type=submit]")
    page.wait_for_selector("#settings-saved:not(.d-none)")
    dialogue = Dialogue.objects.get(owner=user)
    assert (dialogue.model, dialogue.system_prompt) == (
        "fake-small",
        "Answer like a pirate.",
    )

    page.fill("#preset-name", "Pirate")
    page.click("#preset-save-form button[type=submit]")
    page.wait_for_selector("#preset-select >> text=Pirate", state="attached")


def test_language_switch_theme_toggle_and_help_dialog(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    # "?" opens the help dialog listing the shortcuts
    page.locator("#messages").focus()
    page.keyboard.press("?")
    page.wait_for_selector("#help-modal.show")
    assert "Ctrl" in page.inner_text("#help-modal")
    page.wait_for_function("() => document.activeElement.id === 'help-modal'")
    page.keyboard.press("Escape")
    page.wait_for_selector("#help-modal", state="hidden")

    # the theme toggle switches and is remembered
    before = page.get_attribute("html", "data-bs-theme")
    page.click(".sidebar .js-theme-toggle")
    after = page.get_attribute("html", "data-bs-theme")
    assert {before, after} == {"light", "dark"}
    reload(page)
    assert page.get_attribute("html", "data-bs-theme") == after

    # switching to Chinese translates the page and the script strings
    page.select_option("#language-select", "zh-hans")
    page.wait_for_load_state()
    wait_online(page)
    assert page.get_attribute("html", "lang") == "zh-hans"
    assert page.inner_text("#new-dialogue").strip() == "+ 新对话"
    assert page.inner_text("#conn-state .conn-label") == "在线"


def test_screenshots_light_dark_and_phone(page, site, artifacts):
    user = UserFactory(password=PASSWORD, username="ada")
    for title in ["Trip to Kyoto", "Sourdough schedule", "Quarterly report draft"]:
        DialogueFactory(owner=user, title=title)
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="light")
    log_in(page, site, user.username)
    site.fake.configure(text=SHOWCASE, tps=400)
    send(page, "How do I count the most common words in a text with Python?")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "chat-light.png"))

    page.click(".sidebar .js-theme-toggle")
    page.wait_for_timeout(200)
    assert page.get_attribute("html", "data-bs-theme") == "dark"
    page.screenshot(path=str(artifacts / "chat-dark.png"))

    page.click(".sidebar .js-theme-toggle")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    page.screenshot(path=str(artifacts / "chat-phone.png"))
    page.click("[data-bs-target='#sidebar'][data-bs-toggle=offcanvas]")
    page.wait_for_selector("#sidebar.show")
    page.wait_for_timeout(400)
    page.screenshot(path=str(artifacts / "chat-phone-drawer.png"))

    # the same page in Chinese, on the phone
    page.select_option("#language-select", "zh-hans")
    page.wait_for_load_state()
    wait_online(page)
    page.wait_for_selector(".msg-assistant .katex")
    page.wait_for_timeout(400)
    assert page.inner_text("#send-button") == "发送"
    page.screenshot(path=str(artifacts / "chat-phone-zh.png"))

    for name in [
        "chat-light.png",
        "chat-dark.png",
        "chat-phone.png",
        "chat-phone-drawer.png",
        "chat-phone-zh.png",
    ]:
        assert (artifacts / name).stat().st_size > 10_000
