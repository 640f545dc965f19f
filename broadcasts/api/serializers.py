"""Serializers of the broadcasts API: shapes and field checks; the per-recipient checks are the
service's (each bad recipient is reported with its line, not as a 400 for the whole request)."""

from __future__ import annotations

from rest_framework import serializers

from broadcasts.models import Broadcast, Channel


class RecipientInSerializer(serializers.Serializer):
    to = serializers.CharField(required=False, help_text="E.164 phone number, or an email address (email)")
    contact_id = serializers.UUIDField(required=False)
    variables = serializers.DictField(required=False, help_text="values of the body's {{ variables }}")


class ContactFilterSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.UUIDField(), required=False)
    locale = serializers.CharField(required=False)
    consent = serializers.ChoiceField(
        choices=["opted_in"], required=False, help_text="only opted-in contacts"
    )


class RecipientList(serializers.ListField):
    """A JSON list, as given: its items are checked by ``broadcast_create`` (each refused one
    named in ``rejected`` with its line), not one by one by DRF (``child`` documents them)."""

    def to_internal_value(self, data):
        if not isinstance(data, list):
            self.fail("not_a_list", input_type=type(data).__name__)
        if not self.allow_empty and not data:
            self.fail("empty")
        return data


class BroadcastCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    channel = serializers.ChoiceField(choices=Channel.choices)
    body = serializers.CharField(required=False, allow_blank=True, default="")
    template = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    prompt = serializers.CharField(required=False, allow_blank=True, default="",
                                   help_text="the content agent writes the body from it, once per broadcast")  # fmt: skip
    subject = serializers.CharField(required=False, allow_blank=True, default="", max_length=300,
                                    help_text="email (required) and notify: with {{ variables }}")  # fmt: skip
    html = serializers.CharField(required=False, allow_blank=True, default="",
                                 help_text="email and notify: an HTML part with {{ variables }} (values escaped)")  # fmt: skip
    # Not a nested serializer, and no per-item field either: 100,000 recipients through DRF's
    # field machinery cost seconds; the service checks each one and reports the bad ones with
    # their line.
    recipients = RecipientList(child=serializers.JSONField(), required=False, allow_empty=False,
                                       help_text='[{"to": "+14155550100", "variables": {"name": "Ada"}}, …]')  # fmt: skip
    contact_list = serializers.ListField(child=serializers.UUIDField(), required=False, allow_empty=False)
    contact_filter = ContactFilterSerializer(required=False)
    scheduled_for = serializers.DateTimeField(required=False, allow_null=True, default=None)
    rate_per_second = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0.01,
                                             max_value=10_000)  # fmt: skip
    senders = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list,
                                    max_length=100)  # fmt: skip
    quiet_start = serializers.TimeField(required=False, allow_null=True, default=None)
    quiet_end = serializers.TimeField(required=False, allow_null=True, default=None)

    def validate(self, attrs):
        given = [k for k in ("recipients", "contact_list", "contact_filter") if k in attrs]
        if len(given) != 1:
            raise serializers.ValidationError(
                {"recipients": ["Give exactly one of recipients, contact_list or contact_filter."]}
            )
        if (attrs.get("quiet_start") is None) != (attrs.get("quiet_end") is None):
            raise serializers.ValidationError(
                {"quiet_end": ["Give both ends of the quiet hours, or neither."]}
            )
        return attrs


class RejectedSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    address = serializers.CharField()
    reason = serializers.CharField()


class ProgressSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    accepted = serializers.IntegerField()
    rejected = serializers.IntegerField()
    pending = serializers.IntegerField()
    sending = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    cancelled = serializers.IntegerField()
    skipped_by_reason = serializers.DictField(child=serializers.IntegerField())
    done = serializers.IntegerField()
    percent = serializers.FloatField()
    backoff_until = serializers.DateTimeField(allow_null=True)


class BroadcastSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Broadcast
        fields = ["id", "name", "channel", "status", "error", "body", "template", "prompt", "subject", "html", "scheduled_for", "rate_per_second",
                  "senders", "quiet_start", "quiet_end", "created_by", "created_at", "started_at",
                  "finished_at", "progress"]  # fmt: skip

    def get_progress(self, obj) -> ProgressSerializer:
        from broadcasts.selectors import broadcast_progress

        return broadcast_progress(obj)


class BroadcastCreatedSerializer(BroadcastSerializer):
    rejected = RejectedSerializer(many=True, read_only=True)

    class Meta(BroadcastSerializer.Meta):
        fields = [*BroadcastSerializer.Meta.fields, "rejected"]
