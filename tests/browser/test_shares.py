"""A share link made in the chat page, opened in a private window (a fresh browser
context: no session), then revoked."""

from __future__ import annotations

import pytest

from conftest import PASSWORD
from tests.factories import UserFactory

from .conftest import log_in, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_share_link_opens_in_a_private_window_and_stops_when_revoked(
    browser, page, site, console, artifacts
):
    # given a user with a dialogue of two turns
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "First question [[fake tokens=3]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    send(page, "Second question [[fake tokens=4]]")
    page.wait_for_function(
        "() => document.querySelectorAll('.msg-assistant[data-status=complete]').length === 2"
    )

    # when they share it up to the first reply from the Share dialog
    page.click("#open-share")
    page.wait_for_selector("#share-modal.show")
    options = page.locator("#share-upto option")
    assert options.count() == 4
    assert page.eval_on_selector("#share-upto", "s => s.selectedIndex") == 3
    page.select_option("#share-upto", index=1)
    page.click("#share-create")
    page.wait_for_selector("#share-list .share-item[data-revoked=false]")
    url = page.input_value("#share-list .share-url")
    assert url.startswith(f"{site.url}/s/")

    # then a private window without a session reads the first turn only, from one
    # request plus static files, with no socket and nothing from our scripts
    private = browser.new_context()
    reader = private.new_page()
    requests: list[str] = []
    sockets: list[str] = []
    reader.on("request", lambda r: requests.append(r.url))
    reader.on("websocket", lambda ws: sockets.append(ws.url))
    response = reader.goto(url)
    reader.wait_for_load_state("networkidle")
    assert response.status == 200
    texts = [t.strip() for t in reader.locator(".msg .msg-body").all_inner_texts()]
    assert texts == ["First question [[fake tokens=3]]", "tok0 tok1 tok2"]
    assert "Second question" not in reader.content()
    assert (
        reader.locator("meta[name=robots]")
        .get_attribute("content")
        .startswith("noindex")
    )
    assert requests[0] == url
    assert all(r.startswith(f"{site.url}/static/") for r in requests[1:]), requests
    assert sockets == []
    assert reader.locator("#composer").count() == 0
    assert private.cookies() == []
    reader.screenshot(path=str(artifacts / "share-page.png"), full_page=True)

    # when the owner revokes it, the link is gone for the reader too
    page.click("#share-list .share-revoke")
    page.wait_for_selector("#share-list .share-item[data-revoked=true]")
    assert reader.goto(url).status == 404
    private.close()
    assert not [line for line in console if line.startswith(("error", "pageerror"))]
