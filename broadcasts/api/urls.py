from django.urls import path

from broadcasts.api import views

urlpatterns = [
    path("broadcasts/", views.BroadcastCreateView.as_view(), name="broadcast-list"),
    path("broadcasts/<uuid:pk>/", views.BroadcastDetailView.as_view(), name="broadcast-detail"),
    path("broadcasts/<uuid:pk>/pause/", views.BroadcastPauseView.as_view(), name="broadcast-pause"),
    path("broadcasts/<uuid:pk>/resume/", views.BroadcastResumeView.as_view(), name="broadcast-resume"),
    path("broadcasts/<uuid:pk>/cancel/", views.BroadcastCancelView.as_view(), name="broadcast-cancel"),
    path(
        "broadcasts/<uuid:pk>/recipients.csv",
        views.BroadcastRecipientsCsvView.as_view(),
        name="broadcast-csv",
    ),
]
