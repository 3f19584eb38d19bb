"""Importing ChatGPT's export from the chat page: progress, summary, the dialogue."""

from __future__ import annotations

import json

import pytest

from conftest import PASSWORD
from conversations.models import Dialogue
from conversations.tests.test_portable import chatgpt_export
from tests.factories import UserFactory

from .conftest import log_in, wait_hydrated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_import_a_chatgpt_export_and_open_it_on_its_branch(
    page, site, tmp_path, console
):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    good = tmp_path / "conversations.json"
    good.write_text(json.dumps(chatgpt_export()))
    bad = tmp_path / "broken.json"
    bad.write_text("{oops")

    # when they upload the export and a broken file
    page.click("#open-import")
    page.wait_for_selector("#import-modal.show")
    page.set_input_files("#import-file", [str(good), str(bad)])
    page.click("#import-submit")

    # then the summary lists what came in, what was skipped and why the other failed
    page.wait_for_selector("#import-summary .import-file[data-ok=false]")
    assert page.locator("#import-progress").is_visible()
    assert page.get_attribute("#import-progress", "aria-valuenow") == "100"
    ok = page.inner_text("#import-summary .import-file[data-ok=true]")
    assert "1 dialogue imported · 1 skipped" in ok
    assert "Birds (7 messages)" in ok and "Skipped “Empty”" in ok
    assert "Not imported: 1 tool messages" in ok
    error = page.inner_text("#import-summary .import-error")
    assert "not valid JSON" in error and "Nothing was imported" in error
    # and the dialogue is in the list; opened, it shows ChatGPT's branch
    dialogue = Dialogue.objects.get(owner=user)
    page.wait_for_selector(f"#dialogue-list .dlg-item[data-id='{dialogue.pk}']")
    page.click(f"#import-summary a[href='/d/{dialogue.pk}/']")
    wait_hydrated(page)
    texts = page.locator("#message-list .msg:not(.d-none) .msg-body").all_inner_texts()
    assert [t.strip() for t in texts] == [
        "Name a bird",
        "Robin",
        "Draw it",
        "Here is a robin.",
    ]
    assert not [line for line in console if line.startswith("pageerror")]
