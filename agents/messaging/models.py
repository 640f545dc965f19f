"""Message templates and send attempts (the operators' inbox is conversations, fed by
``dossiers.signals.interaction_recorded``)."""

from __future__ import annotations

from django.db import models


class TemplateChannel(models.TextChoices):
    SMS = "sms"
    WHATSAPP = "whatsapp"


class MessageTemplate(models.Model):
    """A named, localised message body.

    ``body`` holds ``{{ var }}`` placeholders filled from the task's variables and the
    contact's fields. A WhatsApp template approved by Meta is referenced by its Twilio
    ``content_sid`` (HX…); ``content_variables`` maps Twilio's numbered slots to our
    variable names, e.g. ``{"1": "name", "2": "date"}``. Only such a template may be sent
    outside WhatsApp's 24-hour window.
    """

    name = models.CharField(max_length=100)
    locale = models.CharField(max_length=16, default="en")
    channel = models.CharField(max_length=16, choices=TemplateChannel.choices)
    body = models.TextField(blank=True, help_text="text with {{ var }} placeholders")
    content_sid = models.CharField(max_length=34, blank=True, help_text="Twilio Content SID (HX…)")
    content_variables = models.JSONField(default=dict, blank=True, help_text='{"1": "name", …}')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "locale"]
        constraints = [
            models.UniqueConstraint(fields=["name", "locale", "channel"], name="template_name_locale_channel")
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.locale}, {self.channel}]"


class SendAttempt(models.Model):
    """Written BEFORE the provider is called, finished after it answered.

    An attempt still ``started`` when the task is claimed again means a worker died
    between the call and our save: the handler reconciles with Twilio before sending again.
    """

    class Outcome(models.TextChoices):
        STARTED = "started"
        ACCEPTED = "accepted"
        REFUSED = "refused"
        RETRY = "retry"
        ABANDONED = "abandoned"  # the task ended (failed, expired, cancelled) with no answer to it

    task = models.ForeignKey("orchestrator.Task", on_delete=models.CASCADE, related_name="send_attempts")
    number = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.STARTED)
    provider_sid = models.CharField(max_length=64, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["task", "number"]
        constraints = [models.UniqueConstraint(fields=["task", "number"], name="sendattempt_task_number")]
        # The periodic close of attempts left open reads only these (a handful at any time).
        indexes = [
            models.Index(fields=["task"], condition=models.Q(outcome="started"), name="sendattempt_open")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.task_id}: {self.outcome}"
