"""Neutral database helpers shared by the apps' services (a leaf: it imports no app)."""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, connections, models, router, transaction
from django.db.models import Func, JSONField, TextField, Value
from django.db.models.constants import OnConflict
from django.db.models.functions import Cast, Concat


def insert_one(obj: models.Model) -> bool:
    """INSERT ``obj`` unless a unique key of it is taken: True when inserted, False when the row
    exists. The insert half of every get-or-create of the services (contacts by phone, tasks by
    idempotency key, webhook events by dedupe key), written once.

    On PostgreSQL it is one statement built by the ORM from the model (what ``Model.save`` runs,
    plus ``ON CONFLICT DO NOTHING RETURNING`` the key): no savepoint, no exception round trip,
    the caller's transaction stays usable. Elsewhere (SQLite) the INSERT runs in a savepoint
    inside a caller's transaction and a unique violation reads as False. ``pre_save`` runs
    (defaults, ``auto_now_add``); no model signals are sent (none are connected to these models).
    """
    model = type(obj)
    using = router.db_for_write(model, instance=obj)
    connection = connections[using]
    pk = model._meta.pk
    fields = [
        f
        for f in model._meta.local_concrete_fields
        if not f.generated and (obj.pk is not None or f is not pk)
    ]
    manager = model._base_manager.using(using)
    if connection.vendor == "postgresql":
        rows = manager._insert([obj], fields=fields, returning_fields=[pk], using=using,
                               on_conflict=OnConflict.IGNORE)  # fmt: skip
        if not rows or rows[0] is None:
            return False
        setattr(obj, pk.attname, rows[0][0])
    else:
        try:
            with transaction.atomic(using=using):
                obj.save(force_insert=True, using=using)
        except IntegrityError:
            return False
    obj._state.adding = False
    obj._state.db = using
    return True


class ValuePerRow(Func):
    """For each row, ``values[row.<key>]`` (NULL where the row's key is not in ``values``): one
    JSON parameter looked up by the database, in place of the ``CASE WHEN id = … THEN …`` per
    row that ``bulk_update`` builds — for a batch of 200 rows, one expression to compile instead
    of 200, and a hash lookup per row instead of a scan of 200 branches.

        Message.objects.filter(id__in=sids).update(provider_sid=ValuePerRow(sids))

    PostgreSQL: ``jsonb_extract_path_text(%s::jsonb, "id"::text)``; SQLite:
    ``json_extract(%s, '$."' || "id" || '"')``. The values come back as text."""

    output_field = TextField()

    def __init__(self, values: dict[Any, Any], key: str = "id") -> None:
        blob = json.dumps({str(k): v for k, v in values.items()}, separators=(",", ":"), default=str)
        super().__init__(Value(blob), Cast(key, TextField()))

    def as_postgresql(self, compiler, connection, **extra):
        blob, key = self.source_expressions
        return Func(
            Cast(blob, JSONField()), key, function="jsonb_extract_path_text", output_field=TextField()
        ).as_sql(compiler, connection)

    def as_sqlite(self, compiler, connection, **extra):
        blob, key = self.source_expressions
        path = Concat(Value('$."'), key, Value('"'), output_field=TextField())
        return Func(blob, path, function="json_extract", output_field=TextField()).as_sql(
            compiler, connection
        )
