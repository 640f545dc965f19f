"""The messaging agent's InboundItem (a second list of the same inbound messages) is retired:
inbox state is ``conversations`` (conversations 0003 copies what is left first)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("messaging", "0003_h15_sendattempt_abandoned")]

    operations = [migrations.DeleteModel(name="InboundItem")]
