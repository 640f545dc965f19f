"""Who we talk to. The contact is minimal for now; the dossier records join it later."""

from __future__ import annotations

import uuid

from django.db import models


class Contact(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=20, blank=True, help_text="E.164, e.g. +14155550100")
    email = models.EmailField(blank=True)
    whatsapp = models.CharField(max_length=40, blank=True, help_text="whatsapp:+E164")
    locale = models.CharField(max_length=16, blank=True, default="en")
    timezone = models.CharField(max_length=64, blank=True, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["phone"]), models.Index(fields=["email"])]

    def __str__(self) -> str:
        return self.name or self.phone or self.email or str(self.id)
