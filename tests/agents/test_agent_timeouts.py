"""An agent's connect, first-byte and idle timeouts: defaults, the admin, and the migration from read_timeout."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from agents.models import Agent, Kind

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


def form(**changes: str) -> dict[str, str]:
    fields = {
        "name": "gpu",
        "kind": "ollama",
        "base_url": "http://127.0.0.1:9",
        "priority": "0",
        "concurrency": "1",
        "connect_timeout": "5",
        "first_byte_timeout": "300",
        "idle_timeout": "30",
        "api_key": "",
        "api_key_header": "",
        "models-TOTAL_FORMS": "0",
        "models-INITIAL_FORMS": "0",
    }
    return fields | changes


def test_a_new_agent_fails_over_within_about_two_minutes_by_default() -> None:
    agent = Agent.objects.create(name="gpu", kind=Kind.OLLAMA, base_url="http://gpu:11434")

    assert (agent.connect_timeout, agent.first_byte_timeout, agent.idle_timeout) == (10, 120, 60)


def test_the_admin_shows_each_timeout_with_what_it_waits_for(signed_in: Client) -> None:
    page = signed_in.get("/admin/agents/agent/add/").content.decode()

    assert "Timeouts" in page
    assert "First-byte timeout" in page and "lets a large model load cold from disk" in page
    assert "Idle timeout" in page and "between streamed chunks" in page


def test_the_timeouts_are_saved_from_the_admin(signed_in: Client) -> None:
    response = signed_in.post("/admin/agents/agent/add/", form(enabled=""), follow=True)

    assert response.status_code == 200
    agent = Agent.objects.get(name="gpu")
    assert (agent.connect_timeout, agent.first_byte_timeout, agent.idle_timeout) == (5, 300, 30)


def test_a_timeout_of_zero_is_refused_with_a_message(signed_in: Client) -> None:
    response = signed_in.post("/admin/agents/agent/add/", form(idle_timeout="0", enabled=""))

    assert response.status_code == 200  # the form again, with the error
    assert "Ensure this value is greater than or equal to 1." in response.content.decode()
    assert not Agent.objects.exists()


def test_the_migration_keeps_a_read_timeout_chosen_by_hand_and_gives_the_rest_the_new_defaults() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("agents", "0003_capability")])
    old = executor.loader.project_state([("agents", "0003_capability")]).apps.get_model("agents", "Agent")
    old.objects.create(name="patient", kind="ollama", base_url="http://cpu:11434", read_timeout=1800)
    old.objects.create(name="default", kind="ollama", base_url="http://gpu:11434", read_timeout=600)

    executor = MigrationExecutor(connection)  # a fresh graph, as `migrate` would read it
    executor.migrate(executor.loader.graph.leaf_nodes("agents"))

    timeouts = {a.name: (a.connect_timeout, a.first_byte_timeout, a.idle_timeout) for a in Agent.objects.all()}
    assert timeouts == {"patient": (10, 1800, 1800), "default": (10, 120, 60)}
