"""The admin and the console need a staff login; the API needs a key."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

pytestmark = pytest.mark.django_db


def admin_pages() -> list[str]:
    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        pages.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
    for name in ("conversations", "supervisor", "calls", "operations", "health"):
        pages.append(reverse(f"dashboard:{name}"))
    return pages


@pytest.fixture
def people(django_user_model):
    staff = django_user_model.objects.create_user("stella", "s@example.com", "pw-stella-1", is_staff=True,
                                                  is_superuser=True)  # fmt: skip
    plain = django_user_model.objects.create_user("paul", "p@example.com", "pw-paul-1")
    return staff, plain


def test_every_admin_and_console_page_refuses_anonymous_and_non_staff(client, people):
    staff, plain = people
    pages = admin_pages()
    assert len(pages) > 10
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], page
    client.force_login(plain)
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], page
    client.force_login(staff)
    for page in pages:
        assert client.get(page).status_code == 200, page
    # The retired per-message queue's links lead to the conversations inbox, for staff only.
    assert client.get(reverse("dashboard:inbox"))["Location"] == reverse("dashboard:conversations")


def test_non_staff_cannot_log_in_to_the_admin(client, people):
    response = client.post(reverse("admin:login"), {"username": "paul", "password": "pw-paul-1"})
    assert response.status_code == 200  # the form again, with an error
    assert "_auth_user_id" not in client.session


def test_a_logged_in_non_staff_user_gets_no_api_access(client, people):
    """Session auth works for the API only for staff (the console); others need a key."""
    client.force_login(people[1])
    assert client.get("/api/tasks/").status_code in (401, 403)
    client.logout()
    assert client.get("/api/tasks/").status_code == 401
