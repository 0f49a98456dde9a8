from django.core.validators import MinValueValidator
from django.db import migrations, models

OLD_DEFAULT = 600


def carry_read_timeouts(apps, schema_editor) -> None:
    """An agent whose read_timeout was chosen by hand keeps that patience for a first byte and between chunks."""
    Agent = apps.get_model("agents", "Agent")
    for agent in Agent.objects.exclude(read_timeout=OLD_DEFAULT):
        agent.first_byte_timeout = agent.idle_timeout = agent.read_timeout
        agent.save(update_fields=["first_byte_timeout", "idle_timeout"])


class Migration(migrations.Migration):
    """read_timeout (600 s between bytes, three attempts: half an hour for a hung backend) becomes
    separate connect, first-byte and idle timeouts."""

    dependencies = [("agents", "0003_capability")]

    operations = [
        migrations.AddField(
            model_name="agent",
            name="connect_timeout",
            field=models.PositiveIntegerField(
                default=10,
                help_text="Seconds to wait for a connection. A backend on the network answers in well under one.",
                validators=[MinValueValidator(1)],
                verbose_name="connect timeout",
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="first_byte_timeout",
            field=models.PositiveIntegerField(
                default=120,
                help_text="Seconds from sending a job to the first byte of the answer. Ollama sends nothing until "
                "the model has loaded and starts answering: 120 s lets a large model load cold from disk. ComfyUI "
                "answers each call (upload, queueing the prompt, its result) at once.",
                validators=[MinValueValidator(1)],
                verbose_name="first-byte timeout",
            ),
        ),
        migrations.AddField(
            model_name="agent",
            name="idle_timeout",
            field=models.PositiveIntegerField(
                default=60,
                help_text="Seconds the backend may go silent once it answers: between streamed chunks for Ollama "
                "(a loaded model writes several a second); for ComfyUI, without a WebSocket message or an answer "
                "to a ping, which it gives even while a node runs for minutes.",
                validators=[MinValueValidator(1)],
                verbose_name="idle timeout",
            ),
        ),
        migrations.RunPython(carry_read_timeouts, migrations.RunPython.noop),
        migrations.RemoveField(model_name="agent", name="read_timeout"),
    ]
