"""Admin: opening a contact is audited; the audit log is read-only."""

from __future__ import annotations

import pytest
from django.conf import settings

from dossiers.models import AuditLog
from dossiers.services import consent_set
from tests.dossiers.factories import alice

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_superuser("jane", "jane@example.com", "pw-long-enough-123")
    client.force_login(user)
    return client


def test_contact_change_view_shows_consent_history_and_is_audited(operator):
    a = alice()
    consent_set(contact_id=a.id, channel="sms", status="opted_out", source="keyword", detail="STOP")
    response = operator.get(f"/admin/dossiers/contact/{a.id}/change/")
    assert response.status_code == 200
    assert b"STOP" in response.content
    audit = AuditLog.objects.get()
    assert (audit.actor, audit.action, audit.object_id, audit.details) == (
        "jane", "view_dossier", str(a.id), {"via": "admin"},
    )  # fmt: skip
    operator.get("/admin/dossiers/contact/")  # the list is not a dossier view
    assert AuditLog.objects.count() == 1


def test_audit_log_admin_lists_but_never_edits(operator):
    a = alice()
    operator.get(f"/admin/dossiers/contact/{a.id}/change/")
    audit = AuditLog.objects.get()
    assert operator.get("/admin/dossiers/auditlog/").status_code == 200
    assert operator.get("/admin/dossiers/auditlog/add/").status_code == 403
    detail = operator.get(f"/admin/dossiers/auditlog/{audit.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert operator.post(f"/admin/dossiers/auditlog/{audit.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditLog.objects.filter(pk=audit.pk).exists()
    # The two refusals are audited too (issue 16: a refusal is a 403 and an audit entry).
    assert list(AuditLog.objects.exclude(pk=audit.pk).values_list("action", "object_id")) == [
        ("denied", f"/admin/dossiers/auditlog/{audit.pk}/delete/"),
        ("denied", "/admin/dossiers/auditlog/add/"),
    ]


def test_retention_runs_every_interval_on_the_orchestrator_queue():
    entry = settings.CELERY_BEAT_SCHEDULE["apply-retention"]
    assert entry["task"] == "dossiers.apply_retention"
    assert entry["options"] == {"queue": "orchestrator"}
    assert entry["schedule"] == float(settings.RETENTION_INTERVAL_SECONDS)
    from dossiers.tasks import apply_retention

    assert apply_retention.name == "dossiers.apply_retention"
