"""comms_platform.pgbackend.rows: the hot paths' single-row statements behave as the ORM's.

Each test compares with what the ORM reads or writes for the same row, on whichever
database the suite runs on (SQLite stores UUIDs and datetimes differently from
PostgreSQL: the helpers must go through the same conversions as the ORM there too).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from comms_platform.pgbackend.rows import db_value, fetch_one, insert_row, update_row
from dossiers.models import Contact
from orchestrator.models import Task, TaskEvent
from orchestrator.states import TaskStatus
from tests.support.services import database_url_for_subprocess, transactional_db, unavailable

pytestmark = pytest.mark.django_db


def _task(**overrides) -> Task:
    contact = Contact.objects.create(name="Ada", phone="+14155550101")
    fields = {"type": "diagnostic.echo", "channel": "system", "contact": contact, "correlation_id": "c-1",
              "payload": {"text": "héllo 👋", "nested": {"list": [1, "two", None]}}, "result": {},
              "expires_at": timezone.now() + timedelta(days=1), "scheduled_for": None, **overrides}  # fmt: skip
    return Task.objects.create(**fields)


def test_fetch_one_reads_every_field_as_a_queryset_does():
    task = _task()
    mine, orm = fetch_one(Task, task.id), Task.objects.get(id=task.id)
    assert type(mine) is Task and mine is not orm
    for field in Task._meta.concrete_fields:
        assert getattr(mine, field.attname) == getattr(orm, field.attname), field.name
    assert mine.payload["nested"]["list"] == [1, "two", None]  # JSON decoded, not a string
    assert mine.expires_at.tzinfo is not None and mine.scheduled_for is None
    assert (mine._state.adding, mine._state.db) == (False, "default")
    assert fetch_one(Task, str(task.id)).id == task.id  # the id as text, as Celery passes it
    assert fetch_one(Task, uuid.uuid4()) is None


def test_fetch_one_by_another_unique_field():
    contact = Contact.objects.create(name="Grace", phone="+14155550102", email="grace@example.com")
    found = fetch_one(Contact, "+14155550102", by="phone")
    assert (found.id, found.name, found.email) == (contact.id, "Grace", "grace@example.com")
    assert fetch_one(Contact, "+14155550199", by="phone") is None


def test_update_row_writes_only_the_named_fields_and_stamps_auto_now():
    task = _task()
    before = Task.objects.get(id=task.id).updated_at
    task.status = TaskStatus.ROUTED
    task.priority = 1  # changed in memory, not named: must not be written
    update_row(task, ["status", "updated_at"])
    stored = Task.objects.get(id=task.id)
    assert (stored.status, stored.priority) == (TaskStatus.ROUTED, 5)
    assert stored.updated_at > before and stored.updated_at == task.updated_at


def test_insert_row_reads_back_a_generated_key_and_stores_what_the_orm_would():
    task = _task()
    mine = TaskEvent(
        task=task, from_status="pending", to_status="routed", actor="test", details={"a": [1, 2]}
    )
    insert_row(mine)
    assert isinstance(mine.pk, int) and not mine._state.adding
    twin = TaskEvent(
        task=task, from_status="pending", to_status="routed", actor="test", details={"a": [1, 2]}
    )
    twin.save()
    stored, orm = TaskEvent.objects.get(pk=mine.pk), TaskEvent.objects.get(pk=twin.pk)
    for field in TaskEvent._meta.concrete_fields:
        if field.name not in {"id", "created_at"}:
            assert getattr(stored, field.attname) == getattr(orm, field.attname), field.name
    assert stored.created_at == mine.created_at  # auto_now_add stamped on the instance and the row
    assert TaskEvent.objects.filter(pk=mine.pk, details__a__1=2).exists()  # JSON, queryable


def test_insert_row_raises_djangos_integrity_error_and_keeps_the_callers_transaction():
    Contact.objects.create(phone="+14155550103")
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic():
            insert_row(Contact(phone="+14155550103"))
        assert Contact.objects.filter(phone="+14155550103").count() == 1  # the outer block goes on


def test_a_statement_in_a_transaction_marked_for_rollback_is_refused_as_the_orm_refuses_it():
    contact = Contact.objects.create(phone="+14155550104")
    with transaction.atomic():
        transaction.set_rollback(True)  # what an error escaping an inner atomic block leaves
        with pytest.raises(TransactionManagementError):
            Contact.objects.get(id=contact.id)
        with pytest.raises(TransactionManagementError):
            fetch_one(Contact, "+14155550104", by="phone")


def test_statements_are_logged_where_queries_are_counted():
    task = _task()
    with CaptureQueriesContext(connection) as queries:
        fetch_one(Task, task.id)
        update_row(task, ["priority"])
    assert len(queries.captured_queries) == 2
    assert queries.captured_queries[0]["sql"].startswith("SELECT ")


def test_db_value_is_the_fields_database_form():
    value = uuid.uuid4()
    assert db_value(Task, "id", value) == (value if connection.vendor == "postgresql" else value.hex)
    assert db_value(Task, "contact", value) == db_value(Task, "id", value)


@transactional_db
@pytest.mark.services
def test_fetch_one_for_update_holds_the_row_lock():
    if connection.vendor != "postgresql":
        unavailable("needs PostgreSQL: SQLite has no row locks")
    task = _task()
    with transaction.atomic():
        assert fetch_one(Task, task.id, for_update=True).id == task.id
        with (
            psycopg.connect(database_url_for_subprocess(), autocommit=True) as other,
            pytest.raises(psycopg.errors.LockNotAvailable),
        ):
            other.execute("SELECT 1 FROM orchestrator_task WHERE id = %s FOR UPDATE NOWAIT", [task.id])
    with psycopg.connect(database_url_for_subprocess(), autocommit=True) as other:  # released at commit
        assert other.execute(
            "SELECT 1 FROM orchestrator_task WHERE id = %s FOR UPDATE NOWAIT", [task.id]
        ).fetchone()
