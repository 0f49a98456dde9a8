"""A batch owes one callback when its last item ends: deliveries and attempts may belong to a batch."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("imagetotext", "0009_presets")]

    operations = [
        migrations.AlterField(
            model_name="callbackdelivery",
            name="job",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="callback_deliveries",
                to="imagetotext.job",
            ),
        ),
        migrations.AddField(
            model_name="callbackdelivery",
            name="batch",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="callback_deliveries",
                to="imagetotext.batch",
            ),
        ),
        migrations.AlterField(
            model_name="callbackattempt",
            name="job",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="callback_attempts",
                to="imagetotext.job",
            ),
        ),
        migrations.AddField(
            model_name="callbackattempt",
            name="batch",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="callback_attempts",
                to="imagetotext.batch",
            ),
        ),
    ]
