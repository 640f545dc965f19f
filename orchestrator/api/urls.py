from django.urls import path

from orchestrator.api import views

urlpatterns = [
    path("tasks/", views.TaskListCreateView.as_view(), name="task-list"),
    path("tasks/<uuid:pk>/", views.TaskDetailView.as_view(), name="task-detail"),
    path("tasks/<uuid:pk>/cancel/", views.TaskCancelView.as_view(), name="task-cancel"),
]
