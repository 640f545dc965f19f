from django.urls import path

from dossiers.api import views

urlpatterns = [
    path("contacts/", views.ContactListCreateView.as_view(), name="contact-list"),
    path("contacts/<uuid:pk>/", views.ContactDetailView.as_view(), name="contact-detail"),
    path("contacts/<uuid:pk>/timeline/", views.ContactTimelineView.as_view(), name="contact-timeline"),
    path("contacts/<uuid:pk>/export/", views.ContactExportView.as_view(), name="contact-export"),
    path("contacts/<uuid:pk>/consent/", views.ContactConsentView.as_view(), name="contact-consent"),
    path("contacts/<uuid:pk>/avatar/", views.ContactAvatarView.as_view(), name="contact-avatar"),
    path(
        "correlations/<str:correlation_id>/timeline/",
        views.CorrelationTimelineView.as_view(),
        name="correlation-timeline",
    ),
    path("artifacts/<uuid:pk>/", views.ArtifactDetailView.as_view(), name="artifact-detail"),
]
