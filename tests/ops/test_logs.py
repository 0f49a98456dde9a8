"""Logs: LOG_FORMAT=json for shippers, no httpx line per request, agents' state changes as warnings."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from agents.health import check_agent
from agents.models import Agent
from aiserver.logs import JsonFormatter
from imagetotext.jobs import log_outcome
from imagetotext.models import Job, State

# A process of the server's, in small: a backend call through httpx, a warning and a crash.
CHILD = """
import logging, django, httpx
django.setup()
httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200))).get("http://agent.test/api/tags")
logging.getLogger("agents.health").warning("Agent gpu went offline: refused")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("imagetotext.jobs").exception("Job 7 crashed")
"""


def run_child(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LOG_")}
    clean.update(DJANGO_SETTINGS_MODULE="aiserver.settings", DATA_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", CHILD], env=clean, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60
    )


def record(message: str, level: int = logging.INFO, exc_info: Any = None) -> logging.LogRecord:
    return logging.LogRecord("imagetotext.jobs", level, __file__, 1, message, (), exc_info)


def test_the_json_formatter_gives_time_level_logger_and_message() -> None:
    line = JsonFormatter().format(record("Job 3 Completed:\nmodel llava:7b", logging.WARNING))
    entry = json.loads(line)
    assert "\n" not in line
    assert set(entry) == {"time", "level", "logger", "message"}
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        "imagetotext.jobs",
        "Job 3 Completed:\nmodel llava:7b",
    )
    assert abs(datetime.fromisoformat(entry["time"]) - timezone.now()) < timedelta(seconds=5)


def test_the_json_formatter_adds_the_traceback_when_there_is_one() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        entry = json.loads(JsonFormatter().format(record("failed", logging.ERROR, sys.exc_info())))
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert entry["exc_info"].endswith("ValueError: boom")


def test_log_format_json_makes_every_line_of_a_process_a_json_object(tmp_path) -> None:
    result = run_child(tmp_path, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(e["level"], e["logger"], e["message"]) for e in entries] == [
        ("WARNING", "agents.health", "Agent gpu went offline: refused"),
        ("ERROR", "imagetotext.jobs", "Job 7 crashed"),
    ]
    assert "ZeroDivisionError: division by zero" in entries[1]["exc_info"]


def test_httpx_says_nothing_per_request_at_the_default_level(tmp_path) -> None:
    result = run_child(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HTTP Request" not in result.stderr
    assert "WARNING agents.health: Agent gpu went offline: refused" in result.stderr


def test_log_level_debug_brings_the_httpx_lines_back(tmp_path) -> None:
    result = run_child(tmp_path, LOG_LEVEL="DEBUG")
    assert result.returncode == 0, result.stderr
    assert 'HTTP Request: GET http://agent.test/api/tags "HTTP/1.1 200 OK"' in result.stderr


def test_an_unknown_log_format_stops_the_process_with_its_name(tmp_path) -> None:
    result = run_child(tmp_path, LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT must be text or json, not 'xml'" in result.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db
def test_an_agent_coming_online_and_going_offline_is_a_warning(fake_ollama, caplog) -> None:
    agent = Agent.objects.create(name="gpu", kind="ollama", base_url=fake_ollama.url)
    with caplog.at_level(logging.INFO, logger="agents.health"):
        assert check_agent(agent)
        assert check_agent(agent)  # still online: no change, no line
        agent.base_url = f"http://127.0.0.1:{closed_port()}"
        assert not check_agent(agent)
        assert not check_agent(agent)
    lines = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records if r.name == "agents.health"]
    assert lines[0][0] == "WARNING" and lines[0][1].startswith("Agent gpu is online with")
    assert lines[1:] == [("WARNING", "Agent gpu went offline")]


@pytest.mark.django_db
def test_a_job_outcome_line_names_its_id_model_agent_state_and_duration(api_user, image, caplog) -> None:
    agent = Agent.objects.create(name="gpu-7", kind="ollama", base_url="http://gpu-7:11434")
    ended = timezone.now()
    job = Job.objects.create(
        owner=api_user,
        image=image,
        model="llava:7b",
        agent=agent,
        state=State.FAILED,
        started_at=ended - timedelta(seconds=2.5),
        finished_at=ended,
    )
    with caplog.at_level(logging.INFO, logger="imagetotext.jobs"):
        log_outcome(job)
    message = caplog.records[-1].getMessage()
    assert message.startswith(f"Job {job.pk} Failed: ")
    assert "model llava:7b" in message and "agent gpu-7" in message and "2.50 s" in message
