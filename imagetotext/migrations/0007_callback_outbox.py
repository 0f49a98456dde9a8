"""Callbacks owed are written with the job's end (CallbackDelivery), so a crash cannot lose one.

Retry Schedules stored by the previous version still run: their task (callbacks.deliver) owes
the rest of that delivery here, with its key.
"""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("imagetotext", "0006_job_lease"),
    ]

    operations = [
        migrations.CreateModel(
            name="CallbackDelivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=36)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("Pending", "Pending"),
                            ("Delivered", "Delivered"),
                            ("GivenUp", "Given up"),
                            ("Superseded", "Superseded"),
                        ],
                        default="Pending",
                        max_length=10,
                    ),
                ),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("due_at", models.DateTimeField(blank=True, db_index=True, null=True)),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="callback_deliveries",
                        to="imagetotext.job",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "callback deliveries",
            },
        ),
    ]
