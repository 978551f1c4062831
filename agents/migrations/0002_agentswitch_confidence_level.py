"""An agent switch's confidence becomes the level the IDE reads; the number moves to ``score``.

Written by hand: the autodetector would alter the float column into a text one in place.
"""

from django.db import migrations, models
from django.db.models import Case, Q, Value, When


def levels_from_scores(apps, schema_editor):
    # The thresholds of agents.chunks.confidence_level when this migration was written.
    AgentSwitch = apps.get_model("agents", "AgentSwitch")
    AgentSwitch.objects.filter(score__isnull=False).update(
        confidence=Case(
            When(Q(score__gte=0.8), then=Value("high")),
            When(Q(score__gte=0.5), then=Value("medium")),
            default=Value("low"),
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("agents", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="agentswitch", old_name="confidence", new_name="score"),
        migrations.AddField(
            model_name="agentswitch",
            name="confidence",
            field=models.CharField(
                blank=True,
                choices=[("high", "high"), ("medium", "medium"), ("low", "low")],
                default="",
                max_length=8,
            ),
        ),
        migrations.RunPython(levels_from_scores, migrations.RunPython.noop),
    ]
