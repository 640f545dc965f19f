from django.apps import AppConfig


class VoiceConfig(AppConfig):
    name = "agents.voice"
    label = "voice"
    verbose_name = "Voice agent"

    def ready(self) -> None:
        # Importing registers the call.outbound handler and its intake validator.
        from agents.voice import handlers  # noqa: F401
