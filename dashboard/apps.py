from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Operator console"

    def ready(self) -> None:
        from broadcasts.signals import progress_changed
        from dashboard.live import forward_broadcast_progress

        # Live progress of broadcasts: in every process that sends or applies callbacks.
        progress_changed.connect(forward_broadcast_progress, dispatch_uid="dashboard.broadcast_progress")
