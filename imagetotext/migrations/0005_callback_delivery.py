from django.db import migrations, models


def outcome_from_delivered(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    """Earlier attempts were delivered or failed; none was known to be in doubt."""
    CallbackAttempt = apps.get_model("imagetotext", "CallbackAttempt")
    CallbackAttempt.objects.filter(delivered=True).update(outcome="Delivered")


def delivered_from_outcome(apps, schema_editor) -> None:  # type: ignore[no-untyped-def]
    CallbackAttempt = apps.get_model("imagetotext", "CallbackAttempt")
    CallbackAttempt.objects.filter(outcome="Delivered").update(delivered=True)


class Migration(migrations.Migration):
    dependencies = [
        ("imagetotext", "0004_job_queued_at"),
    ]

    operations = [
        migrations.AddField(
            model_name="callbackattempt",
            name="idempotency_key",
            field=models.CharField(blank=True, max_length=36),
        ),
        migrations.AddField(
            model_name="callbackattempt",
            name="outcome",
            field=models.CharField(
                choices=[("Delivered", "Delivered"), ("Failed", "Failed"), ("Unknown", "Unknown")],
                default="Failed",
                max_length=10,
            ),
        ),
        migrations.RunPython(outcome_from_delivered, delivered_from_outcome),
        migrations.RemoveField(
            model_name="callbackattempt",
            name="delivered",
        ),
    ]
