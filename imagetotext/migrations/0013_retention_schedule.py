"""Schedule the daily retention purge in django-q2 (it deletes nothing while RETENTION_DAYS is 0)."""

from __future__ import annotations

from django.db import migrations

NAME = "Delete finished jobs past RETENTION_DAYS"


def add_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=NAME,
        defaults={"func": "imagetotext.retention.purge_expired", "schedule_type": "D", "repeats": -1},
    )


def remove_schedule(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("imagetotext", "0012_job_images_and_messages"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
