from django.apps import AppConfig


class EventWebhooksConfig(AppConfig):
    name = "event_webhooks"
    verbose_name = "Event webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from comms_platform import events
        from event_webhooks import services
        from orchestrator.api.auth import register_key_created_hook

        events.register_sink(services.events_enqueue)
        register_key_created_hook(services.callback_secret_for_new_key)
