"""Shared fixtures. The fake backends live in tests/fakes."""

from __future__ import annotations

import importlib
import os

import pytest

from tests.fakes.fixtures import fake_comfyui, fake_ollama  # noqa: F401  (fixtures)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("REDIS_URL") or os.environ.get("DATABASE_URL"):
        require_scaleout_services()


def require_scaleout_services() -> None:
    """In the scale-out pass, stop early and plainly when PostgreSQL or Redis is not there."""
    import psycopg
    import redis

    problems = []
    try:
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
    except Exception as error:  # noqa: BLE001 - any failure means "not usable"
        problems.append(f"Redis at {os.environ.get('REDIS_URL')}: {error}")
    try:
        psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=3).close()
    except Exception as error:  # noqa: BLE001
        problems.append(f"PostgreSQL at {os.environ.get('DATABASE_URL')}: {error}")
    if not problems:
        return
    message = "Scale-out services are not reachable: " + "; ".join(problems)
    if os.environ.get("CI"):
        pytest.exit(message, returncode=1)
    pytest.exit(message + " (skipping the scale-out pass outside CI)", returncode=0)


@pytest.fixture(autouse=True, scope="session")
def private_channel_layer(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the tests' live-update messages out of the developer's var/channels.sqlite3."""
    from django.conf import settings

    if not settings.configured:  # the fakes' own tests can run without Django
        return
    layer = settings.CHANNEL_LAYERS["default"]
    if layer["BACKEND"] == "aiserver.channel_layer.SQLiteChannelLayer":
        layer["CONFIG"]["path"] = str(tmp_path_factory.mktemp("channels") / "channels.sqlite3")


def make_presets() -> list:
    from django.apps import apps

    from imagetotext.models import Preset

    importlib.import_module("imagetotext.migrations.0009_presets").add_presets(apps, None)
    return list(Preset.objects.all())


@pytest.fixture(autouse=True)
def presets(request: pytest.FixtureRequest) -> list:
    """The five presets a migrated database has, for every test that uses the database: tests
    with transaction=True flush it, migrations' data included."""
    if request.node.get_closest_marker("django_db") is None:
        return []
    return make_presets()


@pytest.fixture(autouse=True)
def fresh_redis_channel_layer() -> None:
    """Each test runs its own event loop; a Redis channel layer made in an earlier test's loop keeps
    that loop's locks (one still held if that test ended mid-receive), so each test gets its own."""
    from django.conf import settings

    if settings.configured and "redis" in settings.CHANNEL_LAYERS["default"]["BACKEND"].lower():
        from channels.layers import channel_layers

        channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def fresh_model_lookups() -> None:
    """Each test starts without the model lookups an earlier test's agents left (a flush sends no signals)."""
    from django.conf import settings

    if not settings.configured:
        return
    from imagetotext.api.ratelimit import forget_credit
    from imagetotext.jobs import forget_model_lookups

    forget_model_lookups()
    forget_credit()


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("admin", "admin@example.com", "pw-for-tests-only")


@pytest.fixture
def jobs_run_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    """django-q2 runs each task at once in this process, as its sync mode does."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def api_user(django_user_model):
    return django_user_model.objects.create_user("alice", "alice@example.com", "pw-for-tests-only")


@pytest.fixture
def api_key(api_user) -> str:
    from imagetotext.models import ApiKey

    return ApiKey.issue(api_user, "tests")[1]


@pytest.fixture
def api_client(api_key: str):
    from django.test import Client

    return Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")


@pytest.fixture
def ollama_agent(fake_ollama):
    from agents.health import check_agent
    from agents.models import Agent

    agent = Agent.objects.create(name="gpu", kind="ollama", base_url=fake_ollama.url, concurrency=2)
    assert check_agent(agent), agent.last_error
    return agent


@pytest.fixture
def comfy_agent(fake_comfyui):
    from agents.health import check_agent
    from agents.models import Agent

    agent = Agent.objects.create(name="comfy", kind="comfyui", base_url=fake_comfyui.url)
    assert check_agent(agent), agent.last_error
    return agent


@pytest.fixture
def user_client(client, api_user):
    """A browser-like client signed in as the API user."""
    client.force_login(api_user)
    return client


@pytest.fixture
def image(png_bytes: bytes):
    """A stored image, as an upload leaves it."""
    from imagetotext.models import store_image

    return store_image(png_bytes, "image/png", 64, 48)[0]


@pytest.fixture
def png_bytes() -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def async_orm_connections_closed():
    """For async tests: the async ORM runs in asgiref's shared thread, whose connection
    would stay open and keep PostgreSQL from dropping the test database."""
    from asgiref.sync import sync_to_async
    from django.db import connections

    yield
    await sync_to_async(connections.close_all)()
