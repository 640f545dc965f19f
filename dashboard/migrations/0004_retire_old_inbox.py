"""The per-message inbound queue and its operator profiles are retired: inbox state is
``conversations`` (copied by conversations 0002 and, finally, 0003, which runs first)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("dashboard", "0003_h16a_roles")]

    operations = [
        migrations.DeleteModel(name="InboxItem"),
        migrations.DeleteModel(name="OperatorProfile"),
    ]
