"""Purge hooks: how one retention and erasure policy reaches every app's tables.

The policy lives in ``dossiers.retention``; it deletes the dossiers' own rows and asks each
registered hook for the rest, so no app reaches into another's tables. An app registers its
hook from ``AppConfig.ready``::

    purge.register(purge.PurgeHook(app="orchestrator", expired=..., mentioning=..., erase=...))

* ``expired(cutoff)`` returns ``{kind: queryset}`` of the app's rows past their period, in
  deletion order; ``cutoff(kind)`` is the datetime before which ``RETENTION_DAYS[kind]``
  has run out. The policy counts them (``--dry-run``) or deletes them in batches.
* ``mentioning(contact, identifiers)`` returns ``{kind: queryset}`` of the app's rows that
  hold or point to a contact about to be erased (counted by a dry run).
* ``erase(contact, identifiers, actor)`` erases them, inside the erasure's transaction and
  before the contact row goes, and returns ``{kind: count}``.

A leaf: it imports no app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

Cutoff = Callable[[str], datetime]


@dataclass(frozen=True)
class PurgeHook:
    app: str
    expired: Callable[[Cutoff], dict[str, QuerySet]]
    mentioning: Callable[[Any, list[str]], dict[str, QuerySet]]
    erase: Callable[[Any, list[str], str], dict[str, int]]


_hooks: dict[str, PurgeHook] = {}


def register(hook: PurgeHook) -> None:
    """Register (or replace) an app's hook; called once per app from ``AppConfig.ready``."""
    _hooks[hook.app] = hook


def hooks() -> list[PurgeHook]:
    return list(_hooks.values())


def mentions(identifiers: Iterable[str], field: str = "payload") -> Q:
    """Rows whose JSON ``field`` mentions any of the identifiers (matches nothing when none)."""
    found = Q(pk__in=[])
    for value in identifiers:
        found |= Q(**{f"{field}__icontains": value})
    return found
