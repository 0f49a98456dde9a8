"""imagetotext.rows: instances from statements written once are the instances the ORM makes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.utils import timezone

from agents.models import Agent
from imagetotext import rows
from imagetotext.api.auth import key_for
from imagetotext.models import ApiKey, Job, State, StoredImage, jobs_with_agent_and_image

pytestmark = pytest.mark.django_db


def fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


@pytest.fixture
def job(api_user, image, ollama_agent) -> Job:
    made = Job.objects.create(
        owner=api_user,
        image=image,
        model="llava:7b",
        agent=ollama_agent,
        options={"temperature": 0.2, "stop": ["\n"]},
        tried_agents=[ollama_agent.pk],
    )
    made.move_to(State.STARTED, attempts=1, lease_until=timezone.now() + timedelta(seconds=30))
    return made


def test_every_field_reads_as_the_orm_reads_it(job: Job) -> None:
    sql = f"SELECT {rows.columns(Job)} FROM {Job._meta.db_table} WHERE id = %s"

    read = rows.fetch_one(Job, sql, [job.pk])

    assert read is not None and fields(read) == fields(Job.objects.get(pk=job.pk))
    # Converted, not the driver's raw values: aware datetimes, decoded JSON.
    assert read.started_at is not None and read.started_at.tzinfo is not None
    assert read.options == {"temperature": 0.2, "stop": ["\n"]} and read.tried_agents == [job.agent_id]
    assert not read._state.adding and read._state.db == "default"


def test_a_join_reads_each_model_and_none_where_the_outer_join_found_nothing(job: Job, api_user) -> None:
    waiting = Job.objects.create(owner=api_user, model="llava:7b")  # no image, no agent

    ran, queued = jobs_with_agent_and_image([waiting.pk, job.pk])

    assert (ran.pk, queued.pk) == (job.pk, waiting.pk)  # oldest first
    assert fields(ran.agent) == fields(Agent.objects.get(pk=job.agent_id))
    assert fields(ran.image) == fields(StoredImage.objects.get(pk=job.image_id))
    assert ran.agent.online is True and ran.image.file.name == job.image.file.name
    assert queued.agent is None and queued.image is None


def test_the_job_to_run_costs_one_statement_and_its_relations_none(job: Job, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        (read,) = jobs_with_agent_and_image([job.pk])
        assert (read.agent.name, read.image.sha256) == (job.agent.name, job.image.sha256)


def test_an_api_key_and_its_owner_come_in_one_statement(api_user, api_key: str, django_assert_num_queries) -> None:
    with django_assert_num_queries(1):
        found = key_for(api_key)
        assert found is not None and fields(found.owner) == fields(api_user)
    assert fields(found) == fields(ApiKey.objects.get(owner=api_user))
    assert key_for(api_key + "x") is None


def test_a_plan_is_made_once_per_connection(job: Job) -> None:
    sql = f"SELECT {rows.columns(Job)} FROM {Job._meta.db_table} WHERE id = %s"
    rows.fetch_one(Job, sql, [job.pk])
    plans = connections["default"].__dict__["_imagetotext_row_plans"]
    first = plans[(Job,)]

    rows.fetch_one(Job, sql, [job.pk])

    assert plans[(Job,)] is first
    user = get_user_model()
    assert rows.fetch_one(user, f"SELECT {rows.columns(user)} FROM {user._meta.db_table} WHERE id = 0", []) is None
