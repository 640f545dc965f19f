"""The ORM's single-row operations of the hot paths, as statements built once per model.

Django builds the SQL of every query anew: for a task claim or a transition (a locked
read, an UPDATE and an INSERT, three times per task) building it cost a worker more CPU
than PostgreSQL spent running it. These helpers build each statement once per model (and
field list), run it as a server-side prepared statement (``execute_prepared``) and keep
the ORM's semantics where they matter:

- values go through ``pre_save`` and ``get_db_prep_save`` (``auto_now``, JSON, UUIDs), as in
  ``Model.save``; rows come back through the backend's and the fields' converters and
  ``Model.from_db``, as in a queryset;
- they run in the caller's transaction and raise Django's database errors;
- they send no model signals: use them only for models that have no receivers.

On SQLite (the embedded default) the same statements run through Django's cursor.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import connection, models

from comms_platform.pgbackend.base import execute_prepared


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


@functools.cache
def _select(
    model: type[models.Model], by: str, lock: bool
) -> tuple[str, Any, list[str], list[tuple[int, Any, list]]]:
    """The SELECT by one unique field, that field, the attribute names, and the converters a
    queryset would apply to each column's value (``SQLCompiler.get_converters``)."""
    fields = model._meta.concrete_fields
    key = model._meta.pk if by == "pk" else model._meta.get_field(by)
    columns = ", ".join(_quote(f.column) for f in fields)
    sql = (
        f"SELECT {columns} FROM {_quote(model._meta.db_table)} "  # noqa: S608 (names from the model)
        f"WHERE {_quote(key.column)} = %s LIMIT 1{' FOR UPDATE' if lock else ''}"
    )
    converters = []
    for index, field in enumerate(fields):
        col = field.get_col(model._meta.db_table)
        found = [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
        if found:
            converters.append((index, col, found))
    return sql, key, [f.attname for f in fields], converters


def fetch_one(model: type[models.Model], value: Any, *, by: str = "pk", for_update: bool = False):
    """``model.objects.filter(**{by: value}).first()`` for a unique field ``by`` (the
    primary key by default), with ``select_for_update()`` when ``for_update`` and the
    database has it; None when there is no such row."""
    lock = for_update and connection.features.has_select_for_update
    sql, key, names, converters = _select(model, by, lock)
    rows = execute_prepared(connection, sql, [key.get_db_prep_value(key.to_python(value), connection)])
    if not rows:
        return None
    values = list(rows[0])
    for index, col, functions in converters:
        for function in functions:
            values[index] = function(values[index], col, connection)
    return model.from_db(connection.alias, names, values)


@functools.cache
def _update_statement(
    model: type[models.Model], names: tuple[str, ...]
) -> tuple[str, tuple[models.Field, ...]]:
    fields = tuple(model._meta.get_field(name) for name in names)
    assignments = ", ".join(f"{_quote(f.column)} = %s" for f in fields)
    sql = (
        f"UPDATE {_quote(model._meta.db_table)} SET {assignments} "  # noqa: S608 (names from the model)
        f"WHERE {_quote(model._meta.pk.column)} = %s"
    )
    return sql, fields


def update_row(obj: models.Model, update_fields: Sequence[str]) -> None:
    """``obj.save(update_fields=update_fields)`` for a row that exists (``auto_now`` fields
    named in ``update_fields`` are stamped, as by ``save``)."""
    sql, fields = _update_statement(type(obj), tuple(update_fields))
    params = [f.get_db_prep_save(f.pre_save(obj, False), connection) for f in fields]
    pk_field = obj._meta.pk
    params.append(pk_field.get_db_prep_value(obj.pk, connection))
    execute_prepared(connection, sql, params)


@functools.cache
def _insert_statement(model: type[models.Model], with_pk: bool) -> tuple[str, tuple[models.Field, ...]]:
    pk = model._meta.pk
    fields = tuple(f for f in model._meta.local_concrete_fields if with_pk or f is not pk)
    columns = ", ".join(_quote(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    if not with_pk:
        sql += f" RETURNING {_quote(pk.column)}"
    return sql, fields


def insert_row(obj: models.Model) -> None:
    """``obj.save(force_insert=True)``: the same column values (``pre_save`` and
    ``get_db_prep_save`` of every field, so ``auto_now_add`` and JSON adaptation work as in
    the ORM) in one INSERT. A database-generated primary key (an AutoField left unset) is
    read back onto ``obj``."""
    pk = obj._meta.pk
    generated = isinstance(pk, models.AutoField) and obj.pk is None
    sql, fields = _insert_statement(type(obj), not generated)
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    rows = execute_prepared(connection, sql, params)
    if generated:
        obj.pk = rows[0][0]
    obj._state.adding = False
    obj._state.db = connection.alias


def db_value(model: type[models.Model], field_name: str, value: Any) -> Any:
    """``value`` as the database takes it for ``model.field_name`` (a UUID or a datetime in
    the form SQLite stores it, say): for the parameters of a hand-written statement."""
    field = model._meta.get_field(field_name)
    return field.get_db_prep_save(value, connection)
