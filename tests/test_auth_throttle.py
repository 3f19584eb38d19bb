"""Throttled authentication (issue 15, item 5): failed log-ins per account and per
address lock out until staff lift it; sign-up is throttled per address and can be
closed (invite only, staff create accounts)."""

from __future__ import annotations

import secrets

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.urls import reverse

from conftest import PASSWORD
from conversations.exceptions import RateLimited
from conversations.services.accounts import signup_throttle
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def address() -> str:
    """A client address of its own: counters in Redis outlive a test (and a run)."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def log_in(client, username, password, addr):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=addr
    )


def test_an_account_locks_after_the_failure_limit_even_with_the_right_password(
    client, user, settings
):
    settings.AXES_FAILURE_LIMIT = 5
    addr = address()
    for _ in range(4):
        assert log_in(client, user.username, "wrong", addr).status_code == 200
    assert log_in(client, user.username, "wrong", addr).status_code == 429

    locked = log_in(client, user.username, PASSWORD, addr)

    assert locked.status_code == 429
    assert b"Too many failed log-ins" in locked.content
    assert "_auth_user_id" not in client.session


def test_the_account_lock_holds_from_another_address(client, user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    for _ in range(3):
        log_in(client, user.username, "wrong", address())

    assert log_in(client, user.username, PASSWORD, address()).status_code == 429


def test_an_address_locks_after_failures_on_many_accounts(client, user, settings):
    settings.AXES_FAILURE_LIMIT = 3
    addr = address()
    for i in range(3):
        log_in(client, f"nobody-{i}", "wrong", addr)

    assert log_in(client, user.username, PASSWORD, addr).status_code == 429
    assert log_in(client, user.username, PASSWORD, address()).status_code == 302


def test_staff_lift_a_lock_in_the_admin(client, user, admin_client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    addr = address()
    for _ in range(3):
        log_in(client, user.username, "wrong", addr)
    assert log_in(client, user.username, PASSWORD, addr).status_code == 429

    ids = list(AccessAttempt.objects.values_list("pk", flat=True))
    admin_client.post(
        reverse("admin:axes_accessattempt_changelist"),
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )

    assert not AccessAttempt.objects.exists()
    assert log_in(client, user.username, PASSWORD, addr).status_code == 302


def test_signup_is_throttled_per_address(client, settings):
    settings.SIGNUP_RATE_PER_HOUR = 2
    addr = address()

    def sign_up(name, remote):
        client.logout()
        return client.post(
            reverse("signup"),
            {"username": name, "password1": PASSWORD, "password2": PASSWORD},
            REMOTE_ADDR=remote,
        )

    assert sign_up("one", addr).status_code == 302
    assert sign_up("two", addr).status_code == 302
    refused = sign_up("three", addr)
    elsewhere = sign_up("four", address())

    assert refused.status_code == 429 and b"Too many accounts" in refused.content
    assert elsewhere.status_code == 302
    names = set(get_user_model().objects.values_list("username", flat=True))
    assert "three" not in names and {"one", "two", "four"} <= names


def test_the_signup_window_is_an_hour_on_the_given_clock(settings):
    settings.SIGNUP_RATE_PER_HOUR = 1
    addr = address()
    signup_throttle(address=addr, now=7200.0)

    with pytest.raises(RateLimited) as refused:
        signup_throttle(address=addr, now=7200.0 + 3599)
    signup_throttle(address=addr, now=7200.0 + 3600)  # the next hour

    assert refused.value.extra["retry_after"] == 1


def test_invite_only_closes_signup_and_staff_create_accounts(
    client, admin_client, settings
):
    settings.SIGNUP_ENABLED = False

    page = client.get(reverse("signup"))
    post = client.post(
        reverse("signup"),
        {"username": "walk-in", "password1": PASSWORD, "password2": PASSWORD},
    )
    login_page = client.get(reverse("login"))
    created = admin_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "invited",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "usable_password": "true",
            "chat_quota-TOTAL_FORMS": "0",  # the user admin's quota inline
            "chat_quota-INITIAL_FORMS": "0",
        },
    )

    assert page.status_code == 200 and b"by invitation" in page.content
    assert post.status_code == 403
    assert reverse("signup").encode() not in login_page.content
    assert created.status_code == 302
    names = set(get_user_model().objects.values_list("username", flat=True))
    assert "invited" in names and "walk-in" not in names


def test_signup_is_open_by_default_and_linked_from_login(client):
    assert reverse("signup").encode() in client.get(reverse("login")).content


def test_a_successful_login_is_not_counted_against_the_account(client, settings):
    settings.AXES_FAILURE_LIMIT = 3
    user = UserFactory(password=PASSWORD)
    addr = address()
    for _ in range(2):
        log_in(client, user.username, "wrong", addr)
    assert log_in(client, user.username, PASSWORD, addr).status_code == 302
    client.logout()
    for _ in range(2):
        log_in(client, user.username, "wrong", addr)

    assert log_in(client, user.username, PASSWORD, addr).status_code == 302
