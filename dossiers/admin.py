from django.contrib import admin

from dossiers.models import Contact


@admin.register(Contact)
class ContactAdmin(admin.ModelAdmin):
    list_display = ["name", "phone", "email", "locale", "timezone", "created_at"]
    search_fields = ["name", "phone", "email", "whatsapp"]
    show_full_result_count = False
