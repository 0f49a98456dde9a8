"""The page's tests start with the five presets the migration creates: tests with transaction=True
flush the database, migrations' data included."""

from __future__ import annotations

import importlib

import pytest


def make_presets() -> list:
    from django.apps import apps

    from imagetotext.models import Preset

    importlib.import_module("imagetotext.migrations.0009_presets").add_presets(apps, None)
    return list(Preset.objects.all())


@pytest.fixture(autouse=True)
def presets(request: pytest.FixtureRequest) -> list:
    """The migration's presets, for every test that uses the database."""
    if request.node.get_closest_marker("django_db") is None:
        return []
    return make_presets()
