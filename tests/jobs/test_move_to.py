"""Job.move_to's conditional UPDATE: written directly for plain conditions, through the ORM for the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import Q
from django.utils import timezone

from imagetotext.models import InvalidTransition, Job, State

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(api_user, image, ollama_agent) -> Job:
    return Job.objects.create(owner=api_user, image=image, model="llava:7b", agent=ollama_agent)


def test_a_start_saves_every_field_it_changes(job: Job, ollama_agent) -> None:
    lease = timezone.now() + timedelta(seconds=30)

    job.move_to(State.STARTED, attempts=1, status="Running", lease_until=lease, expect=Q(agent=ollama_agent))

    saved = Job.objects.get(pk=job.pk)
    assert (saved.state, saved.attempts, saved.status, saved.agent_id) == (State.STARTED, 1, "Running", ollama_agent.pk)
    assert saved.lease_until == lease and saved.started_at == job.started_at is not None


def test_an_end_saves_json_and_text(job: Job) -> None:
    job.move_to(State.STARTED, attempts=1)
    job.move_to(State.COMPLETED, output="a red square", result={"done": True, "eval_count": 3}, agent=None)

    saved = Job.objects.get(pk=job.pk)
    assert (saved.output, saved.result, saved.agent_id) == ("a red square", {"done": True, "eval_count": 3}, None)


def test_a_plain_expectation_that_no_longer_holds_changes_nothing(job: Job) -> None:
    with pytest.raises(InvalidTransition):
        job.move_to(State.STARTED, attempts=1, expect=Q(lease_until=timezone.now()))  # it has no lease

    assert Job.objects.get(pk=job.pk).state == State.QUEUED


def test_a_started_job_changes_only_on_the_attempt_read(job: Job) -> None:
    job.move_to(State.STARTED, attempts=1)
    Job.objects.filter(pk=job.pk).update(attempts=2)  # taken up by another run meanwhile

    with pytest.raises(InvalidTransition):
        job.move_to(State.COMPLETED, output="late")
    assert Job.objects.get(pk=job.pk).output == ""


@pytest.mark.parametrize(
    "expect",
    [Q(pk=0) | Q(agent__isnull=False), Q(pk=None) | ~Q(pk=None), Q(model__startswith="llava")],
    ids=["or", "negated", "lookup"],
)
def test_other_expectations_go_through_the_orm(job: Job, expect: Q) -> None:
    job.move_to(State.STARTED, attempts=1, expect=expect)

    assert Job.objects.get(pk=job.pk).state == State.STARTED


def test_an_expectation_by_pk_goes_through_the_orm(job: Job) -> None:
    job.move_to(State.CANCELLED, expect=Q(pk=job.pk))

    assert Job.objects.get(pk=job.pk).state == State.CANCELLED
