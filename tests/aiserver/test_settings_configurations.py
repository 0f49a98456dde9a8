"""Each configuration is chosen by the environment alone; a child process shows what it picked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings

SHOW = (
    "import django, json; django.setup(); from django.conf import settings as s;"
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], 'layer': s.CHANNEL_LAYERS['default']['BACKEND'],"
    "'broker': 'redis' if 'redis' in s.Q_CLUSTER else s.Q_CLUSTER.get('orm'), 'debug': s.DEBUG}))"
)


def settings_in_child(tmp_path, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG"}}
    clean.update(DJANGO_SETTINGS_MODULE="aiserver.settings", DATA_DIR=str(tmp_path), **env)
    result = subprocess.run(
        [sys.executable, "-c", SHOW], env=clean, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_no_variables_give_the_embedded_default(tmp_path) -> None:
    chosen = settings_in_child(tmp_path)
    assert chosen["db"] == "aiserver.sqlite"  # Django's SQLite backend, writers queueing on a file lock
    assert chosen["broker"] == "default"
    assert chosen["layer"] != "channels_redis.core.RedisChannelLayer"
    assert chosen["layer"] != "channels.layers.InMemoryChannelLayer"
    assert (tmp_path / "secret_key").exists()


def test_database_and_redis_urls_give_the_scale_out_configuration(tmp_path) -> None:
    chosen = settings_in_child(
        tmp_path, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test", REDIS_URL="redis://127.0.0.1:6379/15"
    )
    assert chosen["db"] == "django.db.backends.postgresql"
    assert chosen["broker"] == "redis"
    assert chosen["layer"] == "channels_redis.core.RedisChannelLayer"


def test_a_bad_value_stops_the_process_with_its_name(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items()}
    env.update(DJANGO_SETTINGS_MODULE="aiserver.settings", DATA_DIR=str(tmp_path), DEBUG="sometimes")
    result = subprocess.run(
        [sys.executable, "-c", SHOW], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "DEBUG must be true or false" in result.stderr
