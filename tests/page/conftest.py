"""The page's tests start with the five presets the migration creates: tests with transaction=True
flush the database, migrations' data included."""

from __future__ import annotations

import importlib

import pytest

PRESETS = importlib.import_module("imagetotext.migrations.0009_presets").PRESETS


def make_presets() -> list:
    from imagetotext.models import Preset

    for position, (key, label, prompt, task, description) in enumerate(PRESETS):
        Preset.objects.update_or_create(
            key=key,
            defaults={
                "label": label,
                "prompt": prompt,
                "florence_task": task,
                "description": description,
                "position": position,
            },
        )
    return list(Preset.objects.all())


@pytest.fixture(autouse=True)
def presets(request: pytest.FixtureRequest) -> list:
    """The migration's presets, for every test that uses the database."""
    if request.node.get_closest_marker("django_db") is None:
        return []
    return make_presets()
