"""Attachments from the composer, end to end in chromium against daphne and the fake
model: the paperclip, paste and drop; chips with a thumbnail, a progress bar and a
remove button; the message sent once uploads finish; what the model received; the
files still shown after a reload; a failed upload that says why and keeps the text."""

from __future__ import annotations

import base64

import pytest

from attachments.models import Attachment
from attachments.testing import png_bytes
from conftest import PASSWORD, fake_openai_env
from conversations.models import Message
from tests.factories import UserFactory

from .conftest import Site, log_in, reload, reply_text, wait_hydrated

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VISION_MODELS = {"CHAT_MODELS": "fake-model:8192:vision,fake-small:2048"}


@pytest.fixture
def vision_site(daphne_factory, fake_openai, static_root) -> Site:
    """A daphne on the test database whose default model sees pictures."""
    fake_openai.configure(tps=200)
    server = daphne_factory(
        {
            **fake_openai_env(fake_openai),
            **VISION_MODELS,
            "STATIC_ROOT": str(static_root),
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000",
        }
    )
    return Site(url=server.http_url, daphne=server, fake=fake_openai)


def chips(page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#composer-files .file-chip')].map((c) => ({
            name: c.querySelector('.file-name').textContent,
            state: c.dataset.state,
            thumb: !c.querySelector('.file-thumb').classList.contains('d-none'),
            error: c.querySelector('.file-error').textContent,
        }))"""
    )


def shown_attachments(page) -> list[str]:
    return page.locator(
        ".msg-user:not(.d-none) .msg-attachment .att-name"
    ).all_inner_texts()


def test_attach_by_button_see_progress_remove_one_send_and_reload(
    page, vision_site, console
):
    user = UserFactory(password=PASSWORD)
    log_in(page, vision_site, user.username)
    # Uploads at ~1 MB/s, so the progress bar is seen moving.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": 1024 * 1024,
        },
    )
    big = ("line of the long notes\n" * 150_000).encode()  # ~3.3 MB of text

    # when the user picks a picture, a document and a big file with the paperclip
    with page.expect_file_chooser() as chooser:
        page.click("#attach-button")
    chooser.value.set_files(
        [
            {"name": "cat.png", "mimeType": "image/png", "buffer": png_bytes(64, 48)},
            {
                "name": "notes.md",
                "mimeType": "text/markdown",
                "buffer": b"# Notes\nhi\n",
            },
            {"name": "big.txt", "mimeType": "text/plain", "buffer": big},
        ]
    )

    # then each shows as a chip, the picture with a thumbnail, the big one uploading
    page.wait_for_function(
        "() => { const p = document.querySelector('.file-chip:nth-child(3) progress');"
        " return p && p.value > 0 && p.value < 100; }"
    )
    assert [c["name"] for c in chips(page)] == ["cat.png", "notes.md", "big.txt"]
    assert chips(page)[0]["thumb"] and not chips(page)[1]["thumb"]
    # and removing the big one cancels it
    page.click(".file-chip:nth-child(3) .file-remove")
    assert [c["name"] for c in chips(page)] == ["cat.png", "notes.md"]
    cdp.send(
        "Network.emulateNetworkConditions",
        {
            "offline": False,
            "latency": 0,
            "downloadThroughput": -1,
            "uploadThroughput": -1,
        },
    )
    page.wait_for_function(
        "() => [...document.querySelectorAll('.file-chip')].every((c) => c.dataset.state === 'done')"
    )

    # when they send a message with them
    page.fill("#composer-input", "What do you see?")
    page.keyboard.press("Enter")

    # then the message shows its files and the model says what it received
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=15000)
    assert reply_text(page) == "I received 1 picture (64x48) and 1 document (notes.md)."
    assert shown_attachments(page) == ["cat.png", "notes.md"]
    assert chips(page) == []
    message = Message.objects.get(role="user")
    assert [a.name for a in message.attachments.all()] == [
        "cat.png",
        "notes.md",
    ]
    assert not Attachment.objects.filter(name="big.txt", message__isnull=False).exists()

    # and after a reload the files are still there (first paint, then live)
    html = page.context.request.get(page.url).text()  # the server's first paint
    assert html.count('class="msg-attachment" href="/attachments/') == 2
    page.reload()
    wait_hydrated(page)
    assert shown_attachments(page) == ["cat.png", "notes.md"]
    assert (
        page.evaluate(
            "() => document.querySelector('.msg-attachment img').naturalWidth"
        )
        == 64
    )
    assert not [line for line in console if line.startswith("pageerror")], console


PASTE_AND_DROP = """async ([pngBase64]) => {
    const bytes = Uint8Array.from(atob(pngBase64), (c) => c.charCodeAt(0));
    const pasted = new DataTransfer();
    pasted.items.add(new File([bytes], "clipboard.png", { type: "image/png" }));
    const input = document.getElementById("composer-input");
    input.focus();
    input.dispatchEvent(new ClipboardEvent("paste", { clipboardData: pasted, bubbles: true, cancelable: true }));
    const dropped = new DataTransfer();
    dropped.items.add(new File(["a,b\\n1,2\\n"], "table.csv", { type: "text/csv" }));
    const target = document.getElementById("messages");
    target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dropped, bubbles: true, cancelable: true }));
    const highlighted = document.body.classList.contains("drop-active");
    target.dispatchEvent(new DragEvent("drop", { dataTransfer: dropped, bubbles: true, cancelable: true }));
    return highlighted;
}"""


def test_paste_and_drop_attach_files_and_the_send_waits_for_uploads(page, vision_site):
    user = UserFactory(password=PASSWORD)
    log_in(page, vision_site, user.username)

    # when a picture is pasted and a CSV dropped, and Enter pressed at once
    highlighted = page.evaluate(
        PASTE_AND_DROP, [base64.b64encode(png_bytes(30, 20)).decode()]
    )
    page.fill("#composer-input", "Pasted and dropped")
    page.keyboard.press("Enter")

    # then the page showed where to drop, and the message went with both files
    assert highlighted
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=15000)
    assert shown_attachments(page) == ["clipboard.png", "table.csv"]
    assert (
        reply_text(page) == "I received 1 picture (30x20) and 1 document (table.csv)."
    )
    fake = vision_site.fake
    (received,) = [
        found
        for found, body in zip(fake.received, fake.chat_requests, strict=True)
        if body.get("stream")  # the reply, not the title request
    ]
    assert [(p["width"], p["height"]) for p in received["pictures"]] == [(30, 20)]
    assert [d["name"] for d in received["documents"]] == ["table.csv"]


def test_a_failed_upload_says_why_and_the_message_is_kept(page, vision_site):
    user = UserFactory(password=PASSWORD)
    log_in(page, vision_site, user.username)

    # when an HTML page named like a picture is attached and the message sent
    page.set_input_files(
        "#file-input",
        [
            {
                "name": "cat.png",
                "mimeType": "image/png",
                "buffer": b"<!doctype html><p>hi",
            }
        ],
    )
    page.wait_for_selector(".file-chip[data-state=failed]")
    page.fill("#composer-input", "Look at my cat")
    page.keyboard.press("Enter")

    # then the chip says why, nothing is sent and the text stays
    assert "named like a picture" in chips(page)[0]["error"]
    page.wait_for_selector("#composer-alerts .alert")
    assert page.input_value("#composer-input") == "Look at my cat"
    assert page.locator(".msg-user").count() == 0
    assert not Message.objects.exists()

    # and once removed, the text goes alone
    page.click(".file-chip .file-remove")
    assert page.evaluate("() => document.activeElement.id") == "composer-input"
    page.keyboard.press("Enter")
    page.wait_for_selector(".msg-assistant[data-status=complete]", timeout=15000)
    assert shown_attachments(page) == []


def test_a_picture_for_a_model_without_vision_is_refused_and_kept(page, site):
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)

    page.set_input_files(
        "#file-input",
        [{"name": "cat.png", "mimeType": "image/png", "buffer": png_bytes()}],
    )
    page.wait_for_selector(".file-chip[data-state=done]")
    page.fill("#composer-input", "What is this?")
    page.keyboard.press("Enter")

    page.wait_for_selector("#composer-alerts .alert")
    assert "cannot see pictures" in page.inner_text("#composer-alerts")
    assert page.input_value("#composer-input") == "What is this?"
    assert [c["name"] for c in chips(page)] == ["cat.png"]
    assert site.fake.chat_requests == []
    reload(page)
