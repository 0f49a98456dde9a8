"""GET /metrics, read with prometheus-client's own parser and checked against the jobs each test made."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agents.models import Agent, Kind
from imagetotext.models import CallbackAttempt, CallbackDelivery, Job, Outcome, State, WorkerHeartbeat
from tests.live_server import live_server

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client: Client, **headers: str) -> list[Sample]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return [sample for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float | None:
    found = [sample.value for sample in samples if sample.name == name and sample.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else None


def labelled(samples: list[Sample], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(sample.labels.items())): sample.value for sample in samples if sample.name == name}


def job(owner: Any, state: str = State.COMPLETED, model: str = "llava:7b", **fields: Any) -> Job:
    return Job.objects.create(owner=owner, model=model, state=state, **fields)


def ran(owner: Any, agent: Agent | None, seconds: float, tokens: int | None = None, **fields: Any) -> Job:
    """A completed job that ran for `seconds` on `agent`."""
    end = timezone.now()
    start = end - timedelta(seconds=seconds)
    return job(owner, agent=agent, started_at=start, finished_at=end, completion_tokens=tokens, **fields)


def run_on_the_api(api_client: Client, png_bytes: bytes, model: str = "llava:7b") -> None:
    image = SimpleUploadedFile("photo.png", png_bytes, content_type="image/png")
    response = api_client.post("/api/ImageToText", {"image": image, "Model": model})
    assert response.status_code == 200, response.content


@pytest.mark.usefixtures("jobs_run_inline")
def test_jobs_the_api_ran_are_counted_by_state_and_model(
    client: Client, api_client: Client, api_user, ollama_agent, png_bytes
) -> None:
    run_on_the_api(api_client, png_bytes)
    run_on_the_api(api_client, png_bytes)
    job(api_user, State.FAILED)
    job(api_user, State.QUEUED, model="gemma3:4b")

    jobs = labelled(scrape(client), "aiserver_jobs")

    assert jobs == {
        (("model", "llava:7b"), ("state", "Completed")): 2,
        (("model", "llava:7b"), ("state", "Failed")): 1,
        (("model", "gemma3:4b"), ("state", "Queued")): 1,
    }


@pytest.mark.usefixtures("jobs_run_inline")
def test_the_histograms_hold_the_runs_the_api_made(client: Client, api_client: Client, ollama_agent, png_bytes) -> None:
    run_on_the_api(api_client, png_bytes)
    run_on_the_api(api_client, png_bytes)
    done = list(Job.objects.filter(state=State.COMPLETED))
    labels = {"agent": "gpu", "model": "llava:7b"}

    samples = scrape(client)

    assert value(samples, "aiserver_job_duration_seconds_count", **labels) == 2
    assert value(samples, "aiserver_job_duration_seconds_bucket", le="+Inf", **labels) == 2
    seconds = sum(j.duration or 0 for j in done)
    assert value(samples, "aiserver_job_duration_seconds_sum", **labels) == pytest.approx(seconds, abs=1e-3)
    assert all(j.completion_tokens for j in done)
    speed = sum(j.tokens_per_second or 0 for j in done)
    assert value(samples, "aiserver_job_tokens_per_second_count", **labels) == 2
    assert value(samples, "aiserver_job_tokens_per_second_sum", **labels) == pytest.approx(speed, rel=1e-3)


@pytest.mark.usefixtures("jobs_run_inline")
def test_time_to_first_token_is_kept_for_each_run_the_api_made(
    client: Client, api_client: Client, ollama_agent, fake_ollama, png_bytes
) -> None:
    fake_ollama.latency, fake_ollama.chunk_delay = 0.3, 0.05  # it thinks before its first word, then streams
    run_on_the_api(api_client, png_bytes)
    done = Job.objects.get(state=State.COMPLETED)
    labels = {"agent": "gpu", "model": "llava:7b"}

    samples = scrape(client)

    first = (done.first_token_at - done.started_at).total_seconds()
    assert 0.3 <= first < (done.finished_at - done.started_at).total_seconds()
    assert value(samples, "aiserver_job_first_token_seconds_count", **labels) == 1
    assert value(samples, "aiserver_job_first_token_seconds_sum", **labels) == pytest.approx(first, abs=1e-3)
    assert value(samples, "aiserver_job_first_token_seconds_bucket", le="0.25", **labels) == 0
    assert value(samples, "aiserver_job_first_token_seconds_bucket", le="+Inf", **labels) == 1


def test_first_token_times_fall_into_cumulative_buckets(client: Client, api_user, ollama_agent) -> None:
    for first in (0.07, 0.7, 7):
        started = ran(api_user, ollama_agent, 10).started_at
        Job.objects.filter(started_at=started).update(first_token_at=started + timedelta(seconds=first))
    ran(api_user, ollama_agent, 3)  # from before first tokens were kept: not counted
    labels = {"agent": "gpu", "model": "llava:7b"}

    samples = scrape(client)

    buckets = {
        le: value(samples, "aiserver_job_first_token_seconds_bucket", le=le, **labels)
        for le in ("0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "+Inf")
    }
    assert buckets == {"0.05": 0, "0.1": 1, "0.5": 1, "1.0": 2, "5.0": 2, "10.0": 3, "+Inf": 3}
    assert value(samples, "aiserver_job_first_token_seconds_count", **labels) == 3
    assert value(samples, "aiserver_job_first_token_seconds_sum", **labels) == pytest.approx(7.77, abs=0.01)
    assert value(samples, "aiserver_job_duration_seconds_count", **labels) == 4


def test_run_times_fall_into_cumulative_buckets(client: Client, api_user, ollama_agent) -> None:
    for seconds in (0.3, 3, 45):
        ran(api_user, ollama_agent, seconds)
    job(api_user, State.FAILED, agent=ollama_agent, started_at=timezone.now() - timedelta(seconds=1))
    labels = {"agent": "gpu", "model": "llava:7b"}

    samples = scrape(client)

    buckets = {
        le: value(samples, "aiserver_job_duration_seconds_bucket", le=le, **labels)
        for le in ("0.25", "0.5", "2.0", "5.0", "30.0", "60.0", "+Inf")
    }
    assert buckets == {"0.25": 0, "0.5": 1, "2.0": 1, "5.0": 2, "30.0": 2, "60.0": 3, "+Inf": 3}
    assert value(samples, "aiserver_job_duration_seconds_count", **labels) == 3
    assert value(samples, "aiserver_job_duration_seconds_sum", **labels) == pytest.approx(48.3, abs=0.01)


def test_a_job_whose_agent_was_deleted_counts_without_an_agent(client: Client, api_user) -> None:
    ran(api_user, None, 2)

    assert value(scrape(client), "aiserver_job_duration_seconds_count", agent="", model="llava:7b") == 1


def test_tokens_per_second_counts_only_jobs_that_report_tokens(client: Client, api_user, ollama_agent) -> None:
    ran(api_user, ollama_agent, 4, tokens=30)  # 7.5 tokens/s
    ran(api_user, ollama_agent, 1, tokens=120)  # 120 tokens/s
    ran(api_user, ollama_agent, 2, tokens=None)  # Florence and OCR report none
    labels = {"agent": "gpu", "model": "llava:7b"}

    samples = scrape(client)

    buckets = {
        le: value(samples, "aiserver_job_tokens_per_second_bucket", le=le, **labels)
        for le in ("5.0", "10.0", "100.0", "150.0", "+Inf")
    }
    assert buckets == {"5.0": 0, "10.0": 1, "100.0": 1, "150.0": 2, "+Inf": 2}
    assert value(samples, "aiserver_job_tokens_per_second_sum", **labels) == pytest.approx(127.5, rel=1e-3)


def test_queue_depth_and_the_oldest_wait(client: Client, api_user) -> None:
    now = timezone.now()
    for seconds in (120, 30, 5):
        job(api_user, State.QUEUED, queued_at=now - timedelta(seconds=seconds))
    job(api_user, State.STARTED, queued_at=now - timedelta(seconds=900))

    samples = scrape(client)

    assert value(samples, "aiserver_queue_depth") == 3
    assert 120 <= value(samples, "aiserver_queue_oldest_age_seconds") < 130  # type: ignore[operator]


def test_an_empty_queue_has_waited_for_nothing(client: Client) -> None:
    samples = scrape(client)

    assert value(samples, "aiserver_queue_depth") == 0
    assert value(samples, "aiserver_queue_oldest_age_seconds") == 0


def test_in_flight_per_agent_against_its_concurrency(client: Client, api_user, ollama_agent) -> None:
    lease = timezone.now() + timedelta(seconds=30)
    job(api_user, State.STARTED, agent=ollama_agent, lease_until=lease)
    job(api_user, State.QUEUED, agent=ollama_agent, lease_until=lease)  # assigned, not started yet
    job(api_user, State.COMPLETED, agent=ollama_agent)
    Agent.objects.create(name="spare", kind=Kind.OLLAMA, base_url="http://spare.test:11434", online=False)

    samples = scrape(client)

    gpu, spare = {"agent": "gpu", "kind": "ollama"}, {"agent": "spare", "kind": "ollama"}
    assert value(samples, "aiserver_agent_in_flight", **gpu) == 2
    assert value(samples, "aiserver_agent_concurrency", **gpu) == 2
    assert value(samples, "aiserver_agent_up", **gpu) == 1
    assert (value(samples, "aiserver_agent_in_flight", **spare), value(samples, "aiserver_agent_up", **spare)) == (0, 0)


def test_a_disabled_agent_is_down(client: Client, ollama_agent) -> None:
    Agent.objects.filter(pk=ollama_agent.pk).update(enabled=False)

    assert value(scrape(client), "aiserver_agent_up", agent="gpu", kind="ollama") == 0


def test_workers_with_a_recent_beat_are_alive(client: Client) -> None:
    now = timezone.now()
    WorkerHeartbeat.objects.create(name="w:1", beat_at=now, started_at=now)
    WorkerHeartbeat.objects.create(name="w:2", beat_at=now - timedelta(minutes=10), started_at=now)

    assert value(scrape(client), "aiserver_workers_alive") == 1


def test_callbacks_by_delivery_state_and_attempt_outcome(client: Client, api_user) -> None:
    owner = job(api_user, reply_to="https://example.com/hook")
    for state in ("Delivered", "Delivered", "GivenUp", "Pending"):
        CallbackDelivery.objects.create(job=owner, key=state, state=state)
    for number, outcome in enumerate([Outcome.FAILED, Outcome.FAILED, Outcome.DELIVERED, Outcome.DELIVERED], 1):
        CallbackAttempt.objects.create(job=owner, number=number, outcome=outcome)

    samples = scrape(client)

    assert labelled(samples, "aiserver_callback_deliveries") == {
        (("state", "Delivered"),): 2,
        (("state", "GivenUp"),): 1,
        (("state", "Pending"),): 1,
    }
    assert value(samples, "aiserver_callback_attempts_total", outcome="Delivered") == 2
    assert value(samples, "aiserver_callback_attempts_total", outcome="Failed") == 2


def test_a_scrape_costs_the_same_queries_for_one_job_or_many(
    client: Client, api_user, ollama_agent, django_assert_num_queries
) -> None:
    ran(api_user, ollama_agent, 1, tokens=10)
    client.get("/metrics")
    with django_assert_num_queries(8):
        client.get("/metrics")
    for seconds in range(1, 40):
        ran(api_user, ollama_agent, seconds, tokens=10, model=f"model-{seconds % 4}")

    with django_assert_num_queries(8):
        client.get("/metrics")


def http_counts(client: Client) -> dict[tuple[str, str, str], float]:
    found = {}
    for sample in scrape(client):
        if sample.name == "aiserver_http_requests_total":
            found[(sample.labels["route"], sample.labels["method"], sample.labels["status"])] = sample.value
    return found


def test_http_requests_are_counted_by_route_name_and_status(client: Client, api_user) -> None:
    before = http_counts(client)
    client.get("/healthz")
    client.get("/healthz")
    client.post("/healthz")
    client.get("/no/such/page-8a1f")
    client.get("/ImageToText/jobs/987654")

    after = http_counts(client)

    def added(key: tuple[str, str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert added(("healthz", "GET", "200")) == 2
    assert added(("healthz", "POST", "405")) == 1
    assert added(("unmatched", "GET", "404")) == 1
    assert added(("metrics", "GET", "200")) == 1  # the first scrape
    assert sum(added(key) for key in after if key[0] == "image-to-text-job") == 1
    assert not any("987654" in route or "8a1f" in route for route, _, _ in after)


def test_an_unknown_method_is_counted_as_other(client: Client) -> None:
    before = http_counts(client).get(("healthz", "other", "405"), 0)
    client.generic("BREW", "/healthz")

    assert http_counts(client).get(("healthz", "other", "405"), 0) - before == 1


COUNTING_CHILD = """
import sys, django
django.setup()
from django.test import Client
client = Client()
for _ in range(int(sys.argv[1])):
    assert client.get("/healthz").status_code == 200
"""


def test_requests_counted_in_other_processes_are_summed(client: Client, tmp_path: Path, monkeypatch) -> None:
    env = dict(
        os.environ, DATA_DIR=str(tmp_path), ALLOWED_HOSTS="testserver", DJANGO_SETTINGS_MODULE="aiserver.settings"
    )
    for count in (3, 4):
        child = subprocess.run(
            [sys.executable, "-c", COUNTING_CHILD, str(count)],
            env=env,
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode == 0, child.stderr
    folder = tmp_path / "prometheus" / socket.gethostname()
    assert len(list(folder.glob("counter_*.db"))) == 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))

    assert http_counts(client)[("healthz", "GET", "200")] == 7


def test_metrics_need_the_token_when_one_is_set(client: Client, settings) -> None:
    settings.METRICS_TOKEN = "metrics-token-for-tests"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Basic metrics-token-for-tests").status_code == 401
    refused = client.get("/metrics")
    assert refused["WWW-Authenticate"] == "Bearer"
    assert b"aiserver_" not in refused.content
    assert value(scrape(client, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests"), "aiserver_database_up") == 1


def test_metrics_need_no_token_when_none_is_set(client: Client) -> None:
    assert settings.METRICS_TOKEN == ""
    assert client.get("/metrics").status_code == 200


def test_metrics_still_answer_while_the_database_is_down(client: Client, monkeypatch) -> None:
    client.get("/healthz")

    def refuse(self: BaseDatabaseWrapper) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", refuse)

    samples = scrape(client)

    assert value(samples, "aiserver_database_up") == 0
    assert value(samples, "aiserver_queue_depth") is None
    assert any(sample.name == "aiserver_http_requests_total" for sample in samples)


@pytest.mark.slow
def test_serve_sums_the_requests_of_its_web_processes_and_forgets_earlier_runs(tmp_path: Path, fake_ollama) -> None:
    folder = tmp_path / "prometheus" / socket.gethostname()
    folder.mkdir(parents=True)
    (folder / "counter_1.db").write_bytes(b"\0" * 64)  # an earlier run's

    with live_server(tmp_path, OLLAMA_URLS=fake_ollama.url, LOCAL_AGENT="0", WEB_PROCESSES="2") as server:
        assert not (folder / "counter_1.db").exists()
        for _ in range(20):  # a new connection each: the kernel spreads them over both processes
            assert httpx.get(server.url + "/healthz", headers={"Connection": "close"}).status_code == 200
        text = httpx.get(server.url + "/metrics").text

        pids = {path.stem.split("_")[1] for path in folder.glob("counter_*.db")}
        assert len(pids) == 2
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    assert value(samples, "aiserver_http_requests_total", route="healthz", method="GET", status="200") == 20


def test_the_grafana_dashboard_asks_only_for_figures_metrics_gives(client: Client, api_user, ollama_agent) -> None:
    first = timezone.now() - timedelta(seconds=1)
    owner = ran(api_user, ollama_agent, 2, tokens=40, reply_to="https://example.com/hook", first_token_at=first)
    CallbackDelivery.objects.create(job=owner, key="k", state="Pending")
    CallbackAttempt.objects.create(job=owner, number=1, outcome=Outcome.FAILED)
    client.get("/healthz")
    dashboard = json.loads((Path(settings.BASE_DIR) / "docs" / "grafana-dashboard.json").read_text())
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"aiserver_[a-z_]+", target["expr"])
    }

    given = {sample.name for sample in scrape(client)}

    assert len(asked) >= 10
    assert asked <= given, asked - given
