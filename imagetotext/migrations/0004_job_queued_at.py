import django.utils.timezone
from django.db import migrations, models


def queued_when_created(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Existing jobs have waited since they were created, as far as anyone knows."""
    Job = apps.get_model("imagetotext", "Job")
    Job.objects.update(queued_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("imagetotext", "0003_token_bucket"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="queued_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.RunPython(queued_when_created, migrations.RunPython.noop),
    ]
