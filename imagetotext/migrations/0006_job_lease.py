"""Jobs hold their agent's slot by a lease (imagetotext.leases).

Jobs that were assigned or running when the server was upgraded get a lease that has already
run out, so the first heartbeat or safety-net pass takes them up again.
"""

from django.db import migrations, models
from django.utils import timezone


def expire_running(apps, schema_editor):  # type: ignore[no-untyped-def]
    Job = apps.get_model("imagetotext", "Job")
    Job.objects.filter(state__in=["Queued", "Started"], agent__isnull=False).update(lease_until=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("imagetotext", "0005_callback_delivery"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="lease_until",
            field=models.DateTimeField(blank=True, db_index=True, editable=False, null=True),
        ),
        migrations.RunPython(expire_running, migrations.RunPython.noop),
    ]
