from django.apps import AppConfig


class BroadcastsConfig(AppConfig):
    name = "broadcasts"
    verbose_name = "Broadcasts"

    def ready(self) -> None:
        from broadcasts import hooks  # noqa: F401  (registry hooks: provider status callbacks)
