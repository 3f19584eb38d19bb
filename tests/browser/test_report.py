"""Reporting a reply from the chat page lands in the staff review queue."""

from __future__ import annotations

import pytest
from django.test import Client

from conftest import PASSWORD
from conversations.models import Flag, Message
from tests.factories import UserFactory

from .conftest import log_in, reload, send

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_reporting_a_reply_flags_it_for_review_and_marks_it(page, site, console):
    # given a user with a finished reply
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Tell me a joke [[fake tokens=8]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    reply = Message.objects.get(role="assistant")
    assert page.locator(".msg-user .msg-report").is_hidden()

    # when they press Report and send the dialog empty, nothing is sent
    page.click(".msg-assistant .msg-report")
    page.wait_for_selector("#report-modal.show")
    page.wait_for_function("() => document.activeElement.id === 'report-reason'")
    page.click("#report-submit")
    page.wait_for_selector("#report-reason.is-invalid")
    assert page.inner_text("#report-error").strip()
    assert not Flag.objects.exists()

    # and the reason is capped at 1,000 characters
    page.fill("#report-reason", "x" * 1200)
    assert len(page.input_value("#report-reason")) == 1000
    assert page.inner_text("#report-count") == "1000 / 1000"

    # when they give a reason and send
    page.fill("#report-reason", "The joke is offensive.")
    page.click("#report-submit")

    # then a toast confirms, the dialog closes and the reply is marked
    toast = page.wait_for_selector(".toast.show .toast-body")
    assert "reported" in toast.inner_text()
    page.wait_for_selector("#report-modal", state="hidden")
    page.wait_for_selector(f".msg-assistant.msg-reported[data-id='{reply.pk}']")
    assert page.locator(".msg-assistant .msg-report").is_disabled()
    assert page.inner_text(".msg-assistant .msg-report").strip() == "Reported"

    # and the flag is stored as the user's report of that message
    flag = Flag.objects.get()
    assert (flag.source, flag.message_id, flag.dialogue_id) == (
        Flag.Source.USER,
        reply.pk,
        reply.dialogue_id,
    )
    assert flag.reason == "The joke is offensive."
    assert flag.created_by == user

    # and the mark survives a reload
    reload(page)
    page.wait_for_selector(f".msg-assistant.msg-reported[data-id='{reply.pk}']")

    # and the admin's review queue lists it for a superuser
    admin = UserFactory(is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(admin)
    response = staff.get("/admin/conversations/flag/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"/admin/conversations/flag/{flag.pk}/change/" in html
    assert "The joke is offensive." in html
    assert not [line for line in console if line.startswith(("error", "pageerror"))]


def test_the_report_dialog_shows_the_servers_refusal(page, site):
    # given a reply whose message is gone by the time it is reported
    user = UserFactory(password=PASSWORD)
    log_in(page, site, user.username)
    send(page, "Hi [[fake tokens=3]]")
    page.wait_for_selector(".msg-assistant[data-status=complete]")
    page.click(".msg-assistant .msg-report")
    page.wait_for_selector("#report-modal.show")
    Message.objects.filter(role="assistant").delete()

    # when the report is sent
    page.fill("#report-reason", "Wrong answer")
    page.click("#report-submit")

    # then the dialog stays open with the reason, and nothing is marked
    page.wait_for_selector("#report-reason.is-invalid")
    assert page.inner_text("#report-error").strip() == "This reply no longer exists."
    assert page.locator("#report-modal.show").count() == 1
    assert page.locator(".msg-reported").count() == 0
    assert not Flag.objects.exists()
