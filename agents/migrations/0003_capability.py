from django.db import migrations


class Migration(migrations.Migration):
    """AgentModel.task becomes capability: "task" meant Florence-2 tasks and django-q2 tasks too."""

    dependencies = [("agents", "0002_health_check_schedule")]

    operations = [
        migrations.RenameField("agentmodel", "task", "capability"),
    ]
