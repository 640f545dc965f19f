"""Conversations are fed by the real path: signed Twilio webhooks in, the messaging agent's
send through the real SDK to the local fake Twilio out."""

from __future__ import annotations

import pytest

from tests.messaging.conftest import fake_twilio, messaging_settings  # noqa: F401  (fixtures)


@pytest.fixture
def operators(django_user_model):
    """Three people of the operator role: Olivia, Oscar and Otto."""
    from django.contrib.auth.models import Group

    from dashboard.access import ROLES
    from dashboard.roles import roles_sync

    roles_sync(roles=ROLES)
    group = Group.objects.get(name="operator")
    people = []
    for name in ("olivia", "oscar", "otto"):
        user = django_user_model.objects.create_user(
            name, f"{name}@example.com", f"pw-{name}-123", is_staff=True
        )
        user.groups.add(group)
        people.append(user)
    return people
