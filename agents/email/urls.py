from django.urls import path

from agents.email import views
from agents.email.webhooks import SendGridEventsView

urlpatterns = [
    path("webhooks/sendgrid/events/", SendGridEventsView.as_view(), name="sendgrid-events"),
    path("email/unsubscribe/<str:token>/", views.unsubscribe, name="email-unsubscribe"),
]
