"""Admin sign-in brute force: django-axes locks a user name out from an address after
ADMIN_LOGIN_FAILURE_LIMIT failures, the right password included, until the cool-off or
``manage.py axes_reset``; the address it counts cannot be changed by the client."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("from_the_internet")]
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def olga(django_user_model):
    return django_user_model.objects.create_user("olga", password="the-right-password-1", is_staff=True)


def sign_in(client, password: str, address: str = "203.0.113.7", **headers):
    return client.post(LOGIN, {"username": "olga", "password": password}, REMOTE_ADDR=address, **headers)


def test_forty_wrong_passwords_then_the_right_one_does_not_get_in(client, olga, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    answers = [sign_in(client, f"guess-{i}").status_code for i in range(40)]
    assert answers[:4] == [200] * 4  # the form again, with an error
    assert set(answers[5:]) == {429}  # locked out
    response = sign_in(client, "the-right-password-1")
    assert response.status_code == 429
    assert b"locked" in response.content.lower()
    assert "_auth_user_id" not in client.session
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.get(username="olga")
    assert attempt.ip_address == "203.0.113.7" and attempt.failures_since_start >= 5
    assert "the-right-password-1" not in attempt.post_data and "guess-" not in attempt.post_data

    # An administrator lifts the lockout with a command.
    call_command("axes_reset_username", "olga", stdout=io.StringIO())
    assert sign_in(client, "the-right-password-1").status_code == 302
    assert client.session["_auth_user_id"] == str(olga.pk)


def test_a_few_failures_then_success_resets_the_count(client, olga):
    for i in range(4):
        sign_in(client, f"typo-{i}")
    assert sign_in(client, "the-right-password-1").status_code == 302
    client.logout()
    for i in range(4):
        assert sign_in(client, f"typo-again-{i}").status_code == 200  # the count started over


def test_a_forged_forwarded_for_does_not_escape_the_lockout(client, olga, settings):
    settings.TRUSTED_PROXY_HOPS = 1  # as on Render: the proxy appends the real address
    for i in range(5):
        sign_in(client, f"guess-{i}", address="10.0.0.2", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.9")
    forged = sign_in(client, "the-right-password-1", address="10.0.0.2",
                     HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.9")  # fmt: skip
    assert forged.status_code == 429
    from axes.models import AccessAttempt

    assert list(AccessAttempt.objects.values_list("ip_address", flat=True)) == ["203.0.113.9"]
